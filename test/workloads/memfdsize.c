/*
 * memfdsize: private mappings of memfds whose size changed after mmap,
 * and whose first page the mapping wrote or not:
 *   A  4 pages, mapped privately whole; the mapping wrote its first page,
 *      then the memfd's second page was rewritten through the fd (the
 *      mapping, which never copied it, shows the new data).
 *   B  1 page, mapped privately over 4 pages, then grown to 4 pages and
 *      written through the fd: the mapping shows all 4, its first page
 *      never touched by the mapping.
 *   C  4 pages, mapped privately whole; the mapping wrote its first and
 *      third pages, then the memfd was shrunk to 2 pages (the kernel
 *      drops the mapping's copies past the end too).
 *   D  4 pages of holes (ftruncate only); the mapping wrote its first
 *      page and read its second, then the fd wrote the file's first page
 *      (the mapping keeps its own copy).
 * Each memfd stays open as an fd.
 *
 * After restore every page of each mapping reads what it read before,
 * and the memfds have their sizes and data.
 */
#include "workload.h"

#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096

static void fill(char *p, int seed)
{
	for (int i = 0; i < PG; i++)
		p[i] = (char)(seed * 29 + i * 3 + 1);
}

static int same(const char *p, int seed)
{
	for (int i = 0; i < PG; i++)
		if (p[i] != (char)(seed * 29 + i * 3 + 1))
			return 0;
	return 1;
}

static int mkmemfd(const char *name, int pages, int seed)
{
	int fd = memfd_create(name, MFD_CLOEXEC);
	if (fd < 0)
		wl_die("memfd_create");
	char page[PG];
	for (int i = 0; i < pages; i++) {
		fill(page, seed + i);
		if (pwrite(fd, page, PG, (off_t)i * PG) != PG)
			wl_die("pwrite");
	}
	return fd;
}

static char *mapit(int fd, int pages)
{
	char *m = mmap(NULL, (size_t)pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		wl_die("mmap");
	return m;
}

static void want_page(const char *what, const char *p, int seed)
{
	if (!same(p, seed))
		wl_fail("%s differs", what);
}

static void want_size(const char *what, int fd, off_t size)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		wl_fail("%s: fstat: %s", what, strerror(errno));
	else if (st.st_size != size)
		wl_fail("%s is %lld bytes, want %lld", what, (long long)st.st_size, (long long)size);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char page[PG];

	int a = mkmemfd("memfd-a", 4, 10);
	char *ma = mapit(a, 4);
	fill(ma, 100);
	fill(page, 111);
	if (pwrite(a, page, PG, PG) != PG)
		wl_die("pwrite a");

	int b = mkmemfd("memfd-b", 1, 20);
	char *mb = mapit(b, 4);
	if (ftruncate(b, 4 * PG) < 0)
		wl_die("ftruncate b");
	for (int i = 1; i < 4; i++) {
		fill(page, 20 + i);
		if (pwrite(b, page, PG, (off_t)i * PG) != PG)
			wl_die("pwrite b");
	}
	volatile char sink = mb[3 * PG];
	(void)sink;

	int c = mkmemfd("memfd-c", 4, 30);
	char *mc = mapit(c, 4);
	fill(mc, 300);
	fill(mc + 2 * PG, 302);
	if (ftruncate(c, 2 * PG) < 0)
		wl_die("ftruncate c");

	int d = memfd_create("memfd-d", MFD_CLOEXEC);
	if (d < 0 || ftruncate(d, 4 * PG) < 0)
		wl_die("memfd d");
	char *md = mapit(d, 4);
	fill(md, 400);
	sink = md[PG];
	fill(page, 41);
	if (pwrite(d, page, PG, 0) != PG)
		wl_die("pwrite d");

	wl_ready("a %p\nb %p\nc %p\nd %p\n", ma, mb, mc, md);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	want_page("A: the mapping's own first page", ma, 100);
	want_page("A: the mapping's second page (rewritten through the fd)", ma + PG, 111);
	want_page("A: the mapping's third page", ma + 2 * PG, 12);
	want_page("A: the mapping's fourth page", ma + 3 * PG, 13);
	want_size("memfd A", a, 4 * PG);
	if (pread(a, page, PG, 0) != PG || !same(page, 10))
		wl_fail("memfd A's first page changed (the mapping's copy leaked into the file)");
	for (int i = 0; i < 4; i++) {
		char what[64];
		snprintf(what, sizeof(what), "B: page %d of the mapping of the grown memfd", i);
		want_page(what, mb + i * PG, 20 + i);
	}
	want_size("memfd B", b, 4 * PG);
	want_page("C: the mapping's own first page", mc, 300);
	want_page("C: the mapping's second page", mc + PG, 31);
	want_size("memfd C", c, 2 * PG);
	if (pread(c, page, PG, PG) != PG || !same(page, 31))
		wl_fail("memfd C's second page changed");
	want_page("D: the mapping's own first page", md, 400);
	for (int i = 1; i < 4; i++)
		for (int j = 0; j < PG; j++)
			if (md[i * PG + j]) {
				wl_fail("D: page %d of the mapping of holes is not zero", i);
				break;
			}
	want_size("memfd D", d, 4 * PG);
	if (pread(d, page, PG, 0) != PG || !same(page, 41))
		wl_fail("memfd D's first page differs");
	return wl_finish();
}
