/*
 * memfdpriv: a memfd whose mode was changed (fchmod 0640), mapped
 * privately. The first page of the mapping was only read, the second
 * was written (a private copy), the third never touched.
 *
 * A second memfd is mapped privately from its second page on, and its
 * fd closed: the mapping alone holds it. The first page of that mapping
 * was written, the second only read.
 *
 * After restore the memfd has mode 0640, its content is unchanged, and
 * the private mapping reads the file's data in its first and third
 * pages and its own copy in the second, which the file does not show.
 */
#include "workload.h"

#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096

static void fill(char *p, int seed)
{
	for (int i = 0; i < PG; i++)
		p[i] = (char)(seed * 31 + i * 7);
}

static int same(const char *p, int seed)
{
	char want[PG];
	fill(want, seed);
	return memcmp(p, want, PG) == 0;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int fd = memfd_create("memfdpriv", MFD_CLOEXEC);
	if (fd < 0)
		wl_die("memfd_create");
	char page[PG];
	for (int i = 0; i < 3; i++) {
		fill(page, i + 1);
		if (pwrite(fd, page, PG, (off_t)i * PG) != PG)
			wl_die("pwrite");
	}
	if (fchmod(fd, 0640) < 0)
		wl_die("fchmod");
	char *m = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		wl_die("mmap");
	volatile char sink = m[0];
	(void)sink;
	fill(m + PG, 100);

	int fd2 = memfd_create("memfdpriv2", MFD_CLOEXEC);
	if (fd2 < 0)
		wl_die("memfd_create 2");
	for (int i = 0; i < 3; i++) {
		fill(page, i + 11);
		if (pwrite(fd2, page, PG, (off_t)i * PG) != PG)
			wl_die("pwrite 2");
	}
	char *m2 = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd2, PG);
	if (m2 == MAP_FAILED)
		wl_die("mmap 2");
	close(fd2);
	fill(m2, 200);
	sink = m2[PG];
	wl_ready("fd %d\n", fd);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct stat st;
	if (fstat(fd, &st) < 0)
		wl_fail("fstat: %s", strerror(errno));
	else if ((st.st_mode & 07777) != 0640)
		wl_fail("the memfd's mode is %#o, want 0640", st.st_mode & 07777);
	for (int i = 0; i < 3; i++) {
		if (pread(fd, page, PG, (off_t)i * PG) != PG || !same(page, i + 1))
			wl_fail("page %d of the memfd differs", i);
	}
	if (!same(m, 1))
		wl_fail("page 0 of the private mapping (only read) differs from the file");
	if (!same(m + PG, 100))
		wl_fail("page 1 of the private mapping (written) lost its private copy");
	if (!same(m + 2 * PG, 3))
		wl_fail("page 2 of the private mapping (never touched) differs from the file");
	if (!same(m2, 200))
		wl_fail("page 0 of the mapping of the closed memfd (written) lost its private copy");
	if (!same(m2 + PG, 13))
		wl_fail("page 1 of the mapping of the closed memfd (read) differs from the file's page 2");
	return wl_finish();
}
