/*
 * mapshrw: two MAP_SHARED, PROT_READ mappings of files in DIR, whose fds
 * are closed: "rw" was opened O_RDWR, "ro" O_RDONLY. mprotect may make
 * the first writable (the kernel kept VM_MAYWRITE) and not the second.
 *
 * After restore, the same: mprotect(PROT_WRITE) of the "rw" mapping
 * works and a write through it reaches the file; of the "ro" mapping it
 * fails with EACCES (restore opened neither file with other rights).
 */
#include "workload.h"

#include <sys/mman.h>

#define PG 4096

static char *map_file(const char *name, int oflags, char c)
{
	char path[4096];
	wl_path(path, sizeof(path), name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die(path);
	char page[PG];
	memset(page, c, PG);
	if (write(fd, page, PG) != PG)
		wl_die("write");
	close(fd);
	if ((fd = open(path, oflags | O_CLOEXEC)) < 0)
		wl_die(path);
	char *m = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		wl_die("mmap");
	close(fd);
	return m;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char *rw = map_file("rw", O_RDWR, 'w');
	char *ro = map_file("ro", O_RDONLY, 'r');
	wl_ready("rw %p\nro %p\n", rw, ro);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (rw[0] != 'w' || ro[0] != 'r')
		wl_fail("the mappings lost their files' content");
	if (mprotect(rw, PG, PROT_READ | PROT_WRITE) < 0) {
		wl_fail("mprotect(PROT_WRITE) of the shared mapping of a file opened O_RDWR: %s", strerror(errno));
	} else {
		rw[1] = 'X';
		char path[4096], c = 0;
		wl_path(path, sizeof(path), "rw");
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || pread(fd, &c, 1, 1) != 1 || c != 'X')
			wl_fail("a write through the shared mapping did not reach the file");
		if (fd >= 0)
			close(fd);
	}
	if (mprotect(ro, PG, PROT_READ | PROT_WRITE) == 0)
		wl_fail("mprotect(PROT_WRITE) of the shared mapping of a file opened O_RDONLY worked");
	else if (errno != EACCES)
		wl_fail("mprotect(PROT_WRITE) of the shared mapping of a file opened O_RDONLY: %s, want EACCES", strerror(errno));
	return wl_finish();
}
