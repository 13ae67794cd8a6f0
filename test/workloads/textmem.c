/*
 * textmem MIB: MIB MiB of private anonymous memory that compresses well,
 * as a real heap does: every other 64 KiB block is log-like text (lines
 * with a counter, a time and a word from a small list), the rest zeros
 * with a few words written in each page, so that every page is present.
 * After restore it recomputes the checksum and names the first page
 * whose content differs from what it wrote.
 */
#include "workload.h"

#include <stdint.h>
#include <sys/mman.h>

#define BLOCK (64UL << 10)

static const char *words[] = {"GET", "POST", "user", "session", "timeout", "connected", "closed", "cache", "miss", "hit"};

static void fill(char *mem, size_t bytes)
{
	unsigned long line = 0;
	for (size_t off = 0; off < bytes; off += BLOCK) {
		char *b = mem + off;
		if ((off / BLOCK) % 2 == 0) {
			size_t at = 0;
			while (at + 128 < BLOCK) {
				at += snprintf(b + at, 128, "2026-12-05T18:%02lu:%02lu.%06lu INFO worker-%lu %s /api/v1/item/%lu status=200\n",
					       line / 60 % 60, line % 60, line * 7919 % 1000000, line % 8,
					       words[line % 10], line * 31 % 100000);
				line++;
			}
		} else {
			for (size_t p = 0; p < BLOCK; p += 4096)
				*(uint64_t *)(b + p) = off + p + 1;
		}
	}
}

static uint64_t checksum(const char *mem, size_t bytes)
{
	const uint64_t *w = (const uint64_t *)mem;
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < bytes / 8; i++)
		h = (h ^ w[i]) * 0x100000001b3ULL;
	return h;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 256;
	size_t bytes = mib << 20;
	char *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		wl_die("mmap data");
	double t0 = wl_now();
	fill(mem, bytes);
	uint64_t sum = checksum(mem, bytes);
	wl_printf("filled %lu MiB in %.3f s\n", mib, wl_now() - t0);
	wl_ready("pid %d\nmib %lu\nsum %#llx\n", getpid(), mib, (unsigned long long)sum);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	uint64_t want = wl_saved_num("sum");
	uint64_t got = checksum(mem, bytes);
	if (got != want) {
		char *ref = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (ref == MAP_FAILED)
			wl_die("mmap reference");
		fill(ref, bytes);
		size_t bad = 0, first = (size_t)-1;
		for (size_t p = 0; p < bytes; p += 4096) {
			if (memcmp(mem + p, ref + p, 4096) != 0) {
				if (first == (size_t)-1)
					first = p;
				bad++;
			}
		}
		wl_fail("checksum %#llx != %#llx at ready: %zu of %zu pages differ, the first at offset %#zx",
			(unsigned long long)got, (unsigned long long)want, bad, bytes / 4096, first);
	}
	return wl_finish();
}
