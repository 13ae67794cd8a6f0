/*
 * dirtier MIB [locked]: keeps changing its memory while it is checkpointed, for
 * the pre-copy (ctcr dump --pre-copy), whose dump must copy again every
 * page changed since it was first copied.
 *
 * Two regions, each page with a version in a table:
 *   anon  MIB MiB of private anonymous memory; a page of version v > 0
 *         holds words derived from (page, v); version 0 is a page
 *         dropped with MADV_DONTNEED, which reads as zeros;
 *   file  4 MiB private mapping of a file of known words; version v > 0
 *         is a page written (copied on write) with words derived from
 *         (page, v); version 0 is a page dropped with MADV_DONTNEED,
 *         which reads the file again.
 * Until the check, it changes random pages: mostly new versions, every
 * 16th a drop, every 512th an unmap and map again of a 1 MiB piece of
 * anon (a new mapping at the same place, fresh versions), every 1024th a
 * swap of two 1 MiB pieces of anon with mremap (the pages move with their
 * contents; a table of tags says which page's words each slot holds,
 * and the versions follow them). The number of
 * changes also lives in a local variable (a register or the stack, which
 * every dump copies): the versions in the table must add up to it, so a
 * table restored from an old copy fails too.
 *
 * With "locked" it also holds a flock on DIR/lock, which a dump without
 * --file-locks refuses: a dump that fails after its pre-copy.
 */
#include "workload.h"

#include <stdint.h>
#include <sys/file.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define WORDS (PAGE / 8)
#define FILE_BYTES (4UL << 20)
#define PIECE (1UL << 20)

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

static void fill_page(uint64_t *p, uint64_t tag, uint64_t v)
{
	for (size_t i = 0; i < WORDS; i++)
		p[i] = mix(tag * 0x9E3779B97F4A7C15ULL + v * 0x100000001b3ULL + i);
}

/* check_page returns the index of the first wrong word, or -1. */
static long check_page(const uint64_t *p, uint64_t tag, uint64_t v, int zero)
{
	for (size_t i = 0; i < WORDS; i++) {
		uint64_t want = zero ? 0 : mix(tag * 0x9E3779B97F4A7C15ULL + v * 0x100000001b3ULL + i);
		if (p[i] != want)
			return (long)i;
	}
	return -1;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 64;
	size_t anon_pages = (mib << 20) / PAGE, file_pages = FILE_BYTES / PAGE;
	size_t pages = anon_pages + file_pages;

	char path[4096];
	if (argc > 3 && strcmp(argv[3], "locked") == 0) {
		wl_path(path, sizeof(path), "lock");
		int lfd = open(path, O_RDWR | O_CREAT, 0600);
		if (lfd < 0 || flock(lfd, LOCK_EX) < 0)
			wl_die("flock DIR/lock");
	}
	wl_path(path, sizeof(path), "dirtier.data");
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0)
		wl_die("create dirtier.data");
	static uint64_t page[WORDS];
	for (size_t i = 0; i < file_pages; i++) {
		fill_page(page, (1ULL << 40) + i, 0);
		if (write(fd, page, PAGE) != (ssize_t)PAGE)
			wl_die("write dirtier.data");
	}
	uint8_t *anon = mmap(NULL, anon_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *file = mmap(NULL, FILE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	uint64_t *version = mmap(NULL, pages * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t *tag = mmap(NULL, anon_pages * 8, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	/* Where a piece waits during a swap: kept reserved. */
	uint8_t *spare = mmap(NULL, PIECE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED || file == MAP_FAILED || version == MAP_FAILED || tag == MAP_FAILED || spare == MAP_FAILED)
		wl_die("mmap");
	close(fd);

	uint64_t changes = 0, swaps = 0;
	for (size_t i = 0; i < anon_pages; i++) {
		fill_page((uint64_t *)(anon + i * PAGE), i, 1);
		tag[i] = i;
		version[i] = 1;
		changes++;
	}
	wl_ready("pid %d\nmib %lu\n", getpid(), mib);

	uint64_t x = 0x853c49e6748fea9bULL ^ (uint64_t)getpid();
	while (!wl_check_requested()) {
		for (int k = 0; k < 256; k++) {
			x = mix(x + 1);
			size_t i = x % pages;
			uint8_t *p = i < anon_pages ? anon + i * PAGE : file + (i - anon_pages) * PAGE;
			uint64_t t = i < anon_pages ? tag[i] : (1ULL << 40) + (i - anon_pages);
			size_t n = PIECE / PAGE, pieces = anon_pages / n;
			if (x % 1024 == 5 && pieces >= 2) {
				/* Swap two pieces of anon, moving their pages. */
				size_t a = (x >> 12) % pieces, b = (a + 1 + (x >> 24) % (pieces - 1)) % pieces;
				uint8_t *pa = anon + a * PIECE, *pb = anon + b * PIECE;
				int mv = MREMAP_MAYMOVE | MREMAP_FIXED;
				if (mremap(pa, PIECE, PIECE, mv, spare) != spare || mremap(pb, PIECE, PIECE, mv, pa) != pa ||
				    mremap(spare, PIECE, PIECE, mv, pb) != pb ||
				    mmap(spare, PIECE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != spare)
					wl_die("swap two pieces");
				for (size_t j = 0; j < n; j++) {
					size_t ja = a * n + j, jb = b * n + j;
					uint64_t tv = tag[ja], vv = version[ja];
					tag[ja] = tag[jb], version[ja] = version[jb];
					tag[jb] = tv, version[jb] = vv;
				}
				swaps++;
			} else if (x % 512 == 7) {
				/* A new mapping over a 1 MiB piece of anon. */
				size_t first = (i % anon_pages) / n * n;
				if (first + n > anon_pages)
					continue;
				uint8_t *at = anon + first * PAGE;
				if (munmap(at, PIECE) < 0 || mmap(at, PIECE, PROT_READ | PROT_WRITE,
								    MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != at)
					wl_die("map a piece again");
				for (size_t j = first; j < first + n; j++) {
					changes -= version[j];
					version[j] = 7;
					fill_page((uint64_t *)(anon + j * PAGE), tag[j], 7);
					changes += 7;
				}
			} else if (x % 16 == 3) {
				if (madvise(p, PAGE, MADV_DONTNEED) < 0)
					wl_die("madvise");
				changes -= version[i];
				version[i] = 0;
			} else {
				changes++;
				fill_page((uint64_t *)p, t, ++version[i]);
			}
		}
		wl_sleep_ms(1);
	}

	uint64_t sum = 0;
	for (size_t i = 0; i < pages; i++)
		sum += version[i];
	if (sum != changes)
		wl_fail("the version table adds up to %llu, but %llu changes were made: the table is older than the task",
			(unsigned long long)sum, (unsigned long long)changes);
	size_t bad = 0;
	for (size_t i = 0; i < pages; i++) {
		const uint64_t *p = (const uint64_t *)(i < anon_pages ? anon + i * PAGE : file + (i - anon_pages) * PAGE);
		long w;
		if (i < anon_pages)
			w = check_page(p, tag[i], version[i], version[i] == 0);
		else
			w = check_page(p, (1ULL << 40) + (i - anon_pages), version[i], 0);
		if (w >= 0 && bad++ < 5)
			wl_fail("%s page %zu (version %llu): word %ld is %#llx", i < anon_pages ? "anon" : "file",
				i < anon_pages ? i : i - anon_pages, (unsigned long long)version[i], w,
				(unsigned long long)p[w]);
	}
	if (bad > 5)
		wl_fail("%zu pages differ in all", bad);
	wl_printf("%llu changes, %llu swaps, %zu pages checked\n", (unsigned long long)changes, (unsigned long long)swaps, pages);
	return wl_finish();
}
