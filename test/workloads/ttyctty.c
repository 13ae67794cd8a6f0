/*
 * ttyctty: a session leader whose controlling terminal is a pty, holding
 * /dev/tty and no other fd of the terminal.
 *
 * The parent holds the pty's master; its child calls setsid, opens the
 * slave (which, as the leader of a session without a terminal, makes it
 * its controlling terminal), opens /dev/tty and closes the slave. After
 * restore the child must still have the pty as its controlling terminal
 * (/proc/self/stat tty_nr, TIOCGSID through /dev/tty), its fd must still
 * be /dev/tty (5:0) and lead to that pty, both ways: what it writes there
 * the parent reads from the master, and a line the parent writes it reads
 * there. The child reports through its exit status.
 *
 * ttyctty DIR member: the child also forks a task of its session that
 * opens /dev/tty too (its terminal came from its parent at fork), which
 * a dump must refuse naming it. That task dies with the child.
 */
#include "workload.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>

#define CTTY_FD 20

static int child_check(dev_t slave)
{
	int bad = 0;
	struct stat st;
	if (fstat(CTTY_FD, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != 5 || minor(st.st_rdev) != 0) {
		dprintf(2, "fd %d is not /dev/tty (5:0)\n", CTTY_FD);
		bad = 1;
	}
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (n <= 0) {
		dprintf(2, "read /proc/self/stat\n");
		return 1;
	}
	buf[n] = 0;
	char *p = strrchr(buf, ')');
	int ppid, pgrp, sid, tty_nr;
	char state;
	if (!p || sscanf(p + 2, "%c %d %d %d %d", &state, &ppid, &pgrp, &sid, &tty_nr) != 5) {
		dprintf(2, "parse /proc/self/stat\n");
		return 1;
	}
	if ((dev_t)tty_nr != slave) {
		dprintf(2, "controlling terminal %d:%d, was the pty %d:%d\n", major(tty_nr), minor(tty_nr), major(slave), minor(slave));
		bad = 1;
	}
	if (sid != getpid()) {
		dprintf(2, "session %d, want %d\n", sid, getpid());
		bad = 1;
	}
	pid_t s = -1;
	if (ioctl(CTTY_FD, TIOCGSID, &s) < 0 || s != getpid()) {
		dprintf(2, "TIOCGSID through /dev/tty: %d (%s), want %d\n", s, strerror(errno), getpid());
		bad = 1;
	}
	if (write(CTTY_FD, "ping\n", 5) != 5) {
		dprintf(2, "write /dev/tty: %s\n", strerror(errno));
		bad = 1;
	}
	struct pollfd pf = { .fd = CTTY_FD, .events = POLLIN };
	if (poll(&pf, 1, 3000) != 1) {
		dprintf(2, "nothing to read from /dev/tty in 3 s\n");
		return 1;
	}
	n = read(CTTY_FD, buf, sizeof(buf) - 1);
	if (n != 5 || memcmp(buf, "pong\n", 5) != 0) {
		dprintf(2, "read %zd bytes from /dev/tty, want \"pong\\n\"\n", n);
		bad = 1;
	}
	return bad;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		wl_die("posix_openpt");
	char name[64];
	if (ptsname_r(m, name, sizeof(name)))
		wl_die("ptsname");
	struct stat sst;
	if (stat(name, &sst) < 0)
		wl_die(name);
	int ready[2], go[2];
	if (pipe(ready) < 0 || pipe(go) < 0)
		wl_die("pipe");
	pid_t kid = fork();
	if (kid < 0)
		wl_die("fork");
	char c;
	if (kid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(ready[0]);
		close(go[1]);
		if (setsid() < 0)
			_exit(3);
		int s = open(name, O_RDWR);
		if (s < 0)
			_exit(3);
		int t = open("/dev/tty", O_RDWR);
		if (t < 0 || dup2(t, CTTY_FD) != CTTY_FD)
			_exit(3);
		close(t);
		close(s);
		if (argc > 2 && strcmp(argv[2], "member") == 0) {
			int mready[2];
			if (pipe(mready) < 0)
				_exit(3);
			pid_t g = fork();
			if (g < 0)
				_exit(3);
			if (g == 0) {
				prctl(PR_SET_PDEATHSIG, SIGKILL);
				int mt = open("/dev/tty", O_RDWR);
				if (mt < 0 || write(mready[1], "m", 1) != 1)
					_exit(3);
				for (;;)
					pause();
			}
			if (read(mready[0], &c, 1) != 1)
				_exit(3);
		}
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		while (read(go[0], &c, 1) < 0 && errno == EINTR)
			;
		_exit(child_check(sst.st_rdev));
	}
	close(ready[1]);
	close(go[0]);
	if (read(ready[0], &c, 1) != 1)
		wl_die("the child never got its terminal");
	wl_ready("child %d\n", kid);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (write(go[1], "g", 1) != 1)
		wl_fail("tell the child to check: %s", strerror(errno));
	/* The child's ping comes through the line discipline: ONLCR. */
	char buf[64];
	size_t off = 0;
	double end = wl_now() + 3;
	while (off < 6 && wl_now() < end) {
		struct pollfd pf = { .fd = m, .events = POLLIN };
		if (poll(&pf, 1, 100) != 1)
			continue;
		ssize_t n = read(m, buf + off, sizeof(buf) - 1 - off);
		if (n > 0)
			off += n;
	}
	buf[off] = 0;
	if (off != 6 || memcmp(buf, "ping\r\n", 6) != 0)
		wl_fail("the master read %zu bytes \"%s\", want the child's \"ping\\r\\n\"", off, buf);
	if (write(m, "pong\n", 5) != 5)
		wl_fail("write the master: %s", strerror(errno));
	int ws;
	pid_t w;
	end = wl_now() + 5;
	while ((w = waitpid(kid, &ws, WNOHANG)) == 0 && wl_now() < end)
		wl_sleep_ms(10);
	if (w != kid) {
		kill(kid, SIGKILL);
		wl_fail("the child did not end in 5 s");
	} else if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
		wl_fail("the child's check failed (status %#x; its stderr says what)", ws);
	return wl_finish();
}
