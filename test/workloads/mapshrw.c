/*
 * mapshrw: MAP_SHARED, PROT_READ mappings whose fds are closed: of files
 * in DIR, "rw" opened O_RDWR and "ro" O_RDONLY, and of two memfds, one
 * mapped from memfd_create's fd, one from an O_RDONLY reopen of it.
 * mprotect may make those opened for writing writable (the kernel kept
 * VM_MAYWRITE) and not the others.
 *
 * After restore, the same: mprotect(PROT_WRITE) of the writable ones
 * works and a write through the file's reaches the file; of the others
 * it fails with EACCES (restore opened no file with other rights).
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

/* map_memfd maps a one-page memfd shared, read-only, from its own fd or an O_RDONLY reopen. */
static char *map_memfd(int readonly)
{
	int fd = memfd_create("mapshrw", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, PG) < 0)
		wl_die("memfd");
	if (readonly) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		int ro = open(path, O_RDONLY | O_CLOEXEC);
		if (ro < 0)
			wl_die("reopen the memfd");
		close(fd);
		fd = ro;
	}
	char *m = mmap(NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		wl_die("mmap memfd");
	close(fd);
	return m;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char *rw = map_file("rw", O_RDWR, 'w');
	char *ro = map_file("ro", O_RDONLY, 'r');
	char *mrw = map_memfd(0), *mro = map_memfd(1);
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
	if (mprotect(mrw, PG, PROT_READ | PROT_WRITE) < 0)
		wl_fail("mprotect(PROT_WRITE) of the shared mapping of a memfd opened read-write: %s", strerror(errno));
	if (mprotect(mro, PG, PROT_READ | PROT_WRITE) == 0)
		wl_fail("mprotect(PROT_WRITE) of the shared mapping of a memfd opened O_RDONLY worked");
	return wl_finish();
}
