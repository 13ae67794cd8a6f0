/*
 * memfdexec: a memfd holding an executable (busybox, copied from ARGV[2],
 * default /bin/busybox), executed with execveat(fd, "", AT_EMPTY_PATH) by
 * a child before the dump and after restore, through the read-write fd
 * memfd_create gave and through a read-only fd opened again from it.
 *
 * The kernel refuses to execute a file open for writing (ETXTBSY), but
 * counts only the writers that opened it (a reopen through
 * /proc/self/fd), not the fd memfd_create made: restore must give the
 * task its memfd the way memfd_create did, and keep no writer of its
 * own.
 */
#include "workload.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

/* run executes the memfd fd as "true" in a child; returns its errno or 0. */
static int run(int fd)
{
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		wl_die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		char *argv[] = { "true", NULL }, *envp[] = { NULL };
		syscall(SYS_execveat, fd, "", argv, envp, AT_EMPTY_PATH);
		int e = errno;
		if (write(p[1], &e, sizeof(e)) < 0)
			_exit(126);
		_exit(127);
	}
	close(p[1]);
	int e = 0;
	if (read(p[0], &e, sizeof(e)) != sizeof(e))
		e = 0;
	close(p[0]);
	int status;
	if (waitpid(pid, &status, 0) < 0)
		wl_die("waitpid");
	if (!e && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
		e = EIO;
	return e;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	const char *src = argc > 2 ? argv[2] : "/bin/busybox";
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		wl_die(src);
	int mfd = memfd_create("memfdexec", MFD_CLOEXEC);
	if (mfd < 0)
		wl_die("memfd_create");
	char buf[65536];
	ssize_t n;
	while ((n = read(in, buf, sizeof(buf))) > 0)
		if (write(mfd, buf, n) != n)
			wl_die("write memfd");
	if (n < 0)
		wl_die("read");
	close(in);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", mfd);
	int xfd = open(path, O_RDONLY | O_CLOEXEC);
	if (xfd < 0)
		wl_die("reopen the memfd read-only");
	int e = run(xfd);
	if (!e)
		e = run(mfd);
	if (e) {
		errno = e;
		wl_die("execveat of the memfd before the dump");
	}
	wl_ready("fd %d\nrofd %d\n", mfd, xfd);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if ((e = run(mfd)) != 0)
		wl_fail("execveat of the restored memfd through its read-write fd: %s", strerror(e));
	if ((e = run(xfd)) != 0)
		wl_fail("execveat of the restored memfd through its read-only fd: %s", strerror(e));
	if (lseek(mfd, 0, SEEK_CUR) != lseek(xfd, 0, SEEK_END))
		wl_fail("the read-write fd's position moved");
	return wl_finish();
}
