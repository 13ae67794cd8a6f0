/*
 * ttyjob: a job on the terminal ctcr runs on.  stdin, stdout and stderr
 * are a pty slave whose master is outside the dumped tree (the test's);
 * the workload sets a window size on it first.  Dumped and restored with
 * --shell-job, its fds must be a terminal again (ctcr's own) that it can
 * query and write to.
 *
 *   ttyjob DIR      stdout/stderr are the terminal, so DIR/out is unused
 */
#include "workload.h"

#include <sys/ioctl.h>
#include <termios.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	for (int fd = 0; fd < 3; fd++)
		if (!isatty(fd))
			wl_die("fd 0-2 must be a terminal");
	struct winsize ws;
	if (ioctl(1, TIOCGWINSZ, &ws) < 0)
		wl_die("TIOCGWINSZ");
	wl_ready("pid %d\n", (int)getpid());
	while (!wl_check_requested())
		wl_sleep_ms(10);

	for (int fd = 0; fd < 3; fd++)
		if (!isatty(fd))
			wl_fail("fd %d is not a terminal after restore", fd);
	struct termios t;
	if (tcgetattr(0, &t) < 0)
		wl_fail("tcgetattr on stdin: %s", strerror(errno));
	if (ioctl(1, TIOCGWINSZ, &ws) < 0)
		wl_fail("TIOCGWINSZ on stdout: %s", strerror(errno));
	char msg[64];
	int n = snprintf(msg, sizeof(msg), "ttyjob %d says hello\n", (int)getpid());
	if (write(1, msg, n) != n)
		wl_fail("write to the terminal: %s", strerror(errno));
	return wl_finish();
}
