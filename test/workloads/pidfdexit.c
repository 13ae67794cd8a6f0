/*
 * pidfdexit: pidfds of a child that has exited and was reaped, one
 * blocking and one non-blocking. Such a pidfd names no process any more
 * (fdinfo "Pid: -1") but is still a pidfd.
 *
 * After restore both are pidfds of no process: fdinfo says Pid -1, they
 * poll readable at once, a signal through them fails with ESRCH, waitid
 * on them finds no child, and the second is still non-blocking.
 */
#include "workload.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif
#ifndef PIDFD_NONBLOCK
#define PIDFD_NONBLOCK O_NONBLOCK
#endif

/* fdinfo_pid returns the "Pid:" of fd's fdinfo, or -2 if it has none. */
static int fdinfo_pid(int fd)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0)
		return -2;
	buf[n] = 0;
	char *p = strstr(buf, "\nPid:");
	return p ? atoi(p + 5) : -2;
}

static void check(const char *what, int fd, int nonblock)
{
	if (fdinfo_pid(fd) != -1)
		wl_fail("%s: fdinfo Pid is %d, want -1", what, fdinfo_pid(fd));
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 0) != 1 || !(p.revents & POLLIN))
		wl_fail("%s: does not poll readable (revents %#x)", what, p.revents);
	if (syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) == 0 || errno != ESRCH)
		wl_fail("%s: pidfd_send_signal did not fail with ESRCH: %s", what, strerror(errno));
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PIDFD, fd, &si, WEXITED | WNOHANG) == 0 || errno != ECHILD)
		wl_fail("%s: waitid did not fail with ECHILD: %s", what, strerror(errno));
	int fl = fcntl(fd, F_GETFL);
	if (!!(fl & O_NONBLOCK) != nonblock)
		wl_fail("%s: flags %#x, O_NONBLOCK want %d", what, fl, nonblock);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0)
		_exit(7);
	int bfd = syscall(SYS_pidfd_open, child, 0);
	int nfd = syscall(SYS_pidfd_open, child, PIDFD_NONBLOCK);
	if (bfd < 0 || nfd < 0)
		wl_die("pidfd_open");
	int st;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st) != 7)
		wl_die("waitpid");
	if (fdinfo_pid(bfd) != -1) {
		errno = EINVAL;
		wl_die("the reaped child's pidfd does not show Pid -1");
	}
	wl_ready("child %d\n", (int)child);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	check("blocking pidfd of the reaped child", bfd, 0);
	check("non-blocking pidfd of the reaped child", nfd, 1);
	return wl_finish();
}
