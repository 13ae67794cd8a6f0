/*
 * pidfd: a pidfd of a child (as Go's os/exec holds one), and one of the
 * workload itself, non-blocking.
 *
 * After restore the child's pidfd still names the child: a signal sent
 * through it reaches it, it polls readable once the child is gone, and
 * waitid on it returns the child. The workload's own pidfd names it and
 * is still non-blocking.
 */
#include "workload.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

static int pid_of(int pidfd)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pidfd);
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strstr(buf, "\nPid:");
	return p ? atoi(p + 5) : -1;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		for (;;)
			pause();
	}
	int cfd = syscall(SYS_pidfd_open, child, 0);
	int sfd = syscall(SYS_pidfd_open, getpid(), O_NONBLOCK);
	if (cfd < 0 || sfd < 0)
		wl_die("pidfd_open");

	wl_ready("child %d\n", (int)child);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (pid_of(cfd) != (int)wl_saved_num("child"))
		wl_fail("the child's pidfd names %d, was %llu", pid_of(cfd), wl_saved_num("child"));
	if (pid_of(sfd) != getpid() || !(fcntl(sfd, F_GETFL) & O_NONBLOCK))
		wl_fail("the own pidfd names %d (want %d), flags %#x", pid_of(sfd), getpid(), fcntl(sfd, F_GETFL));
	if (syscall(SYS_pidfd_send_signal, cfd, 0, NULL, 0) < 0)
		wl_fail("the child is not alive through its pidfd: %s", strerror(errno));
	if (syscall(SYS_pidfd_send_signal, cfd, SIGKILL, NULL, 0) < 0)
		wl_fail("kill through the pidfd: %s", strerror(errno));
	struct pollfd p = { .fd = cfd, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1)
		wl_fail("the child's pidfd did not poll readable when it died");
	siginfo_t si;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PIDFD, cfd, &si, WEXITED) < 0 || si.si_pid != child)
		wl_fail("waitid on the pidfd: %s, pid %d", strerror(errno), si.si_pid);
	return wl_finish();
}
