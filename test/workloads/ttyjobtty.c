/*
 * ttyjobtty: a job of a shell that holds /dev/tty, its session's
 * terminal, which the shell (outside the dumped tree) leads. Dumped and
 * restored with --shell-job, /dev/tty becomes ctcr's terminal, as the
 * job's other terminal fds do.
 *
 * After restore the fd must still be a terminal, and the job writes
 * "ttyjobtty PID via /dev/tty" through it for the test to read.
 */
#include "workload.h"

#define TTY_FD 20

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int t = open("/dev/tty", O_RDWR);
	if (t < 0 || dup2(t, TTY_FD) != TTY_FD)
		wl_die("/dev/tty");
	close(t);
	wl_ready("fd %d\n", TTY_FD);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (!isatty(TTY_FD))
		wl_fail("fd %d is no terminal after restore", TTY_FD);
	char msg[64];
	int n = snprintf(msg, sizeof(msg), "ttyjobtty %d via /dev/tty\n", (int)getpid());
	if (write(TTY_FD, msg, n) != n)
		wl_fail("write fd %d: %s", TTY_FD, strerror(errno));
	return wl_finish();
}
