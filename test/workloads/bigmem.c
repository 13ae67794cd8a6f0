/*
 * bigmem MIB: fills MIB MiB of private anonymous memory with xorshift64*
 * output and keeps a 16 MiB region that is never touched.  After restore it
 * recomputes the checksum, regenerates the data to find the first page that
 * differs, and checks that the untouched region still reads as zeros.
 */
#include "workload.h"

#include <stdint.h>
#include <sys/mman.h>

#define HOLE_BYTES (16UL << 20)

static uint64_t next(uint64_t *x)
{
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return *x * 0x2545F4914F6CDD1DULL;
}

static void fill(uint64_t *mem, size_t words, uint64_t seed)
{
	uint64_t x = seed;
	for (size_t i = 0; i < words; i++)
		mem[i] = next(&x);
}

static uint64_t checksum(const uint64_t *mem, size_t words)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < words; i++)
		h = (h ^ mem[i]) * 0x100000001b3ULL;
	return h;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 256;
	size_t bytes = mib << 20, words = bytes / 8;
	uint64_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		wl_die("mmap data");
	const unsigned char *hole = mmap(NULL, HOLE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (hole == MAP_FAILED)
		wl_die("mmap hole");

	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t seed = (uint64_t)ts.tv_nsec * 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid() ^ 1;
	double t0 = wl_now();
	fill(mem, words, seed);
	uint64_t sum = checksum(mem, words);
	wl_printf("filled %lu MiB in %.3f s\n", mib, wl_now() - t0);
	wl_ready("pid %d\nmib %lu\nseed %#llx\nsum %#llx\naddr %p\n", getpid(), mib,
		 (unsigned long long)seed, (unsigned long long)sum, (void *)mem);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	uint64_t want = wl_saved_num("sum");
	uint64_t got = checksum(mem, words);
	if (got != want) {
		uint64_t x = wl_saved_num("seed");
		size_t bad_pages = 0, first = (size_t)-1;
		uint64_t first_got = 0, first_want = 0;
		for (size_t i = 0; i < words; i++) {
			uint64_t w = next(&x);
			if (mem[i] != w) {
				if (first == (size_t)-1) {
					first = i;
					first_got = mem[i];
					first_want = w;
				}
				bad_pages++;
				size_t skip = 512 - i % 512; /* rest of the page */
				for (size_t j = 1; j < skip && i + 1 < words; j++) {
					i++;
					next(&x);
				}
			}
		}
		if (bad_pages == 0)
			wl_fail("checksum %#llx != %#llx at ready, yet every page matches the seed", (unsigned long long)got, (unsigned long long)want);
		else
			wl_fail("checksum %#llx != %#llx at ready: %zu of %zu pages differ, first at offset %#zx (got %#llx, want %#llx)",
			(unsigned long long)got, (unsigned long long)want, bad_pages, bytes / 4096,
			first * 8, (unsigned long long)first_got, (unsigned long long)first_want);
	}
	for (size_t i = 0; i < HOLE_BYTES; i++) {
		if (hole[i]) {
			wl_fail("never-touched region reads %#x at offset %#zx, want 0", hole[i], i);
			break;
		}
	}
	return wl_finish();
}
