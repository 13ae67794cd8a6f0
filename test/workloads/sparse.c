/*
 * sparse MIB: a private anonymous reservation of MIB MiB (MAP_NORESERVE;
 * 1048576 is 1 TiB) of which only 8 pages, spread from its first page to
 * its last, were written.
 *
 * After restore those 8 pages hold their data, and they are the only
 * pages of the reservation in memory (mincore): a restore that populated
 * more than the image's pages, the whole VMA say, made the task's memory
 * as big as its address space.  A few never-written pages still read as
 * zeros (checked after mincore, since reading maps the zero page).
 */
#include "workload.h"

#include <stdint.h>
#include <sys/mman.h>

#define PG 4096UL
#define NPAGES 8

static void fill(unsigned char *p, unsigned seed)
{
	for (unsigned long i = 0; i < PG; i++)
		p[i] = (unsigned char)(seed * 131 + i * 7 + 1);
}

static int same(const unsigned char *p, unsigned seed)
{
	for (unsigned long i = 0; i < PG; i++)
		if (p[i] != (unsigned char)(seed * 131 + i * 7 + 1))
			return 0;
	return 1;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 512;
	size_t bytes = mib << 20, pages = bytes / PG;
	unsigned char *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (m == MAP_FAILED)
		wl_die("mmap the reservation");
	/* Written pages: the first two, six spread over the rest, the last. */
	size_t at[NPAGES] = {0, 1, pages / 7, pages / 3, pages / 2 + 5, pages / 2 + 6, pages - 2, pages - 1};
	for (int i = 0; i < NPAGES; i++)
		fill(m + at[i] * PG, i + 1);
	wl_ready("pid %d\nmib %lu\naddr %p\n", getpid(), mib, (void *)m);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	/* Count resident pages in pieces: the vector for 1 TiB would be 256 MiB. */
	static unsigned char vec[1 << 20];
	size_t resident = 0;
	for (size_t off = 0; off < pages; off += sizeof(vec)) {
		size_t n = pages - off < sizeof(vec) ? pages - off : sizeof(vec);
		if (mincore(m + off * PG, n * PG, vec) < 0)
			wl_die("mincore");
		for (size_t i = 0; i < n; i++)
			resident += vec[i] & 1;
	}
	if (resident != NPAGES)
		wl_fail("%zu pages of the %lu MiB reservation are in memory, want the %d written ones", resident, mib, NPAGES);
	for (int i = 0; i < NPAGES; i++)
		if (!same(m + at[i] * PG, i + 1))
			wl_fail("written page %zu of the reservation lost its data", at[i]);
	size_t zero[] = {2, pages / 4, pages - 3};
	for (size_t i = 0; i < sizeof(zero) / sizeof(zero[0]); i++)
		for (unsigned long j = 0; j < PG; j++)
			if (m[zero[i] * PG + j]) {
				wl_fail("never-written page %zu reads %#x at byte %lu, want 0", zero[i], m[zero[i] * PG + j], j);
				break;
			}
	return wl_finish();
}
