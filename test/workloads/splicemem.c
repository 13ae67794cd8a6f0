/*
 * splicemem MIB: memory of many kinds of mapping, every written byte a
 * function of its address, for the dump's splice write path (the task
 * vmsplices its pages into pipes, ctcr splices them into the image):
 *
 *   large    MIB MiB private anonymous, every page written
 *   sparse   4*MIB MiB reserved, runs of 1-17 written pages with holes of
 *            1-40 pages between them (many pagemap runs, many iovecs)
 *   small    400 mappings of 1-3 pages between guard pages, read-write,
 *            read-only after written, and PROT_NONE after written (which
 *            the dump reads through /proc/PID/mem, not vmsplice)
 *   shared   a MAP_SHARED anonymous mapping of 3 MiB, written
 *
 * At the check every page must hold what was written (never-written pages
 * of the sparse reservation zeros), byte for byte, and the fd table must
 * be the one it had when ready (with `fds`: listed in ready as "fds N,M,..";
 * the test then tells which extra fds it expects).
 */
#include "workload.h"

#include <dirent.h>
#include <stdint.h>
#include <sys/mman.h>

#define PG 4096UL
#define NSMALL 400

static inline uint64_t word(uint64_t addr, uint64_t salt)
{
	uint64_t x = addr * 0x9e3779b97f4a7c15ULL ^ salt;
	x ^= x >> 29;
	x *= 0xbf58476d1ce4e5b9ULL;
	return x ^ x >> 32;
}

static void fill(unsigned char *p, size_t len, uint64_t salt)
{
	uint64_t *w = (uint64_t *)p;
	for (size_t i = 0; i < len / 8; i++)
		w[i] = word((uint64_t)(uintptr_t)&w[i], salt);
}

/* bad returns the offset of the first wrong word of p, or -1. */
static long bad(const unsigned char *p, size_t len, uint64_t salt)
{
	const uint64_t *w = (const uint64_t *)p;
	for (size_t i = 0; i < len / 8; i++)
		if (w[i] != word((uint64_t)(uintptr_t)&w[i], salt))
			return (long)(i * 8);
	return -1;
}

static long nonzero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return (long)i;
	return -1;
}

static struct {
	unsigned char *at;
	size_t len;
	int prot;
} small[NSMALL];

/* listfds writes the open fds, "3,4,7", into buf. */
static void listfds(char *buf, size_t cap)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		wl_die("opendir /proc/self/fd");
	int me = dirfd(d);
	size_t off = 0;
	buf[0] = 0;
	int fds[1024], n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 1024) {
		if (e->d_name[0] == '.')
			continue;
		int fd = atoi(e->d_name);
		if (fd != me)
			fds[n++] = fd;
	}
	closedir(d);
	for (int i = 0; i < n; i++)
		for (int j = i + 1; j < n; j++)
			if (fds[j] < fds[i]) {
				int t = fds[i];
				fds[i] = fds[j];
				fds[j] = t;
			}
	for (int i = 0; i < n && off + 16 < cap; i++)
		off += snprintf(buf + off, cap - off, "%s%d", i ? "," : "", fds[i]);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 32;
	size_t large_len = mib << 20, sparse_len = 4 * large_len, shared_len = 3 << 20;

	unsigned char *large = mmap(NULL, large_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	unsigned char *sparse = mmap(NULL, sparse_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	unsigned char *shared = mmap(NULL, shared_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (large == MAP_FAILED || sparse == MAP_FAILED || shared == MAP_FAILED)
		wl_die("mmap");
	fill(large, large_len, 1);
	fill(shared, shared_len, 3);
	/* Runs of written pages and holes of varying lengths. */
	size_t pages = sparse_len / PG;
	unsigned r = 12345;
	for (size_t pg = 0; pg < pages;) {
		r = r * 1103515245 + 12345;
		size_t run = 1 + (r >> 16) % 17, hole = 1 + (r >> 8) % 40;
		if (pg + run > pages)
			run = pages - pg;
		fill(sparse + pg * PG, run * PG, 2);
		pg += run + hole;
	}
	/* Small mappings, each between guard pages so that none merge. */
	for (int i = 0; i < NSMALL; i++) {
		size_t len = (1 + i % 3) * PG;
		unsigned char *g = mmap(NULL, len + 2 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (g == MAP_FAILED)
			wl_die("mmap small");
		unsigned char *p = g + PG;
		if (mprotect(p, len, PROT_READ | PROT_WRITE) < 0)
			wl_die("mprotect");
		fill(p, len, 4 + i);
		int prot = i % 5 == 3 ? PROT_READ : i % 5 == 4 ? PROT_NONE : PROT_READ | PROT_WRITE;
		if (mprotect(p, len, prot) < 0)
			wl_die("mprotect small");
		small[i].at = p, small[i].len = len, small[i].prot = prot;
	}
	char fds[8192];
	listfds(fds, sizeof(fds));
	wl_ready("pid %d\nmib %lu\nfds %s\n", getpid(), mib, fds);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	long off;
	if ((off = bad(large, large_len, 1)) >= 0)
		wl_fail("large mapping: byte %ld of %zu differs", off, large_len);
	if ((off = bad(shared, shared_len, 3)) >= 0)
		wl_fail("shared mapping: byte %ld differs", off);
	r = 12345;
	int sparse_bad = 0;
	for (size_t pg = 0; pg < pages && !sparse_bad;) {
		r = r * 1103515245 + 12345;
		size_t run = 1 + (r >> 16) % 17, hole = 1 + (r >> 8) % 40;
		if (pg + run > pages)
			run = pages - pg;
		if ((off = bad(sparse + pg * PG, run * PG, 2)) >= 0) {
			wl_fail("sparse mapping: written page %zu byte %ld differs", pg + off / PG, off % PG);
			sparse_bad = 1;
		}
		size_t h = pg + run + hole > pages ? pages - pg - run : hole;
		if (!sparse_bad && (off = nonzero(sparse + (pg + run) * PG, h * PG)) >= 0) {
			wl_fail("sparse mapping: never-written page %zu reads nonzero at byte %ld", pg + run + off / PG, off % PG);
			sparse_bad = 1;
		}
		pg += run + hole;
	}
	for (int i = 0; i < NSMALL; i++) {
		if (small[i].prot == PROT_NONE && mprotect(small[i].at, small[i].len, PROT_READ) < 0)
			wl_die("mprotect small back");
		if ((off = bad(small[i].at, small[i].len, 4 + i)) >= 0) {
			wl_fail("small mapping %d (prot %d): byte %ld differs", i, small[i].prot, off);
			break;
		}
	}
	char now[8192];
	listfds(now, sizeof(now));
	/* The test may expect more fds (a killed ctcr's residue): "fds_after". */
	char want[8192];
	if (wl_read_file("fds_after", want, sizeof(want)) < 0)
		snprintf(want, sizeof(want), "%s", fds);
	want[strcspn(want, "\n")] = 0;
	if (strcmp(now, want) != 0)
		wl_fail("fd table %s, want %s", now, want);
	return wl_finish();
}
