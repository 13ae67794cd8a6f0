#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
static void copy(const char *src, const char *dst) {
	char buf[1 << 16];
	int in = open(src, O_RDONLY), o = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0) write(o, buf, n);
	close(in); close(o);
}
int main(int argc, char **argv) {
	char p[512];
	/* a file whose name holds a newline and a trailing " (deleted)" of its own */
	snprintf(p, sizeof p, "%s/.tmp new\nline (deleted)", argv[1]);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ftruncate(fd, 4096);
	mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
	snprintf(p, sizeof p, "%s/.tmp  two spaces ", argv[1]);
	int fd2 = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ftruncate(fd2, 4096);
	mmap(NULL, 4096, PROT_READ, MAP_PRIVATE, fd2, 0);
	prctl(PR_SET_NAME, "x\ny) 1 2 3 (", 0, 0, 0);
	snprintf(p, sizeof p, "%s/maps-odd-names", argv[1]); copy("/proc/self/maps", p);
	snprintf(p, sizeof p, "%s/stat-newline-comm", argv[1]); copy("/proc/self/stat", p);
	snprintf(p, sizeof p, "%s/status-newline-comm", argv[1]); copy("/proc/self/status", p);
	snprintf(p, sizeof p, "%s/.tmp  two spaces ", argv[1]); unlink(p);
	return 0;
}
