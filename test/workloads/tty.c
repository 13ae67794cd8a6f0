/*
 * tty: pseudo-terminal pairs the workload holds both ends of.
 *
 *   pair A: master and two slave descriptions (the second dup'ed), the
 *           slave this session leader's controlling terminal, with odd
 *           termios (raw-ish input, VMIN 3, VTIME 7, VINTR ^G, ONLCR
 *           output), locked termios bits, a window size, exclusive mode
 *           and bytes buffered both ways: input "abc" for the slave,
 *           output "hi\n" (read as "hi\r\n") for the master
 *   pair B: a master never unlocked, in packet mode
 *   pair C: canonical mode with echo (the defaults), the master wrote
 *           "line one\npartial" (one complete line, one partial) and
 *           the slave wrote "pending output\n", none of it read yet
 *
 * After restore each setting must be back, the pty index too when it is
 * free, the buffered bytes must be there exactly once (not echoed or
 * translated twice, lines still lines) and bytes must flow both ways
 * between master and slave.
 */
#include "workload.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>

static int get_int(int fd, unsigned long req, const char *what)
{
	int v = -1;
	if (ioctl(fd, req, &v) < 0)
		wl_fail("%s: %s", what, strerror(errno));
	return v;
}

static void write_all(int fd, const char *s, size_t n, const char *what)
{
	if (write(fd, s, n) != (ssize_t)n)
		wl_fail("write %s: %s", what, strerror(errno));
}

/* read_n reads exactly n bytes within about 2 s. */
static void read_n(int fd, char *buf, size_t n, const char *what)
{
	size_t off = 0;
	double end = wl_now() + 2;
	while (off < n && wl_now() < end) {
		/* A blocking read would wait for ever for bytes that are lost. */
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 100) != 1)
			continue;
		ssize_t r = read(fd, buf + off, n - off);
		if (r > 0)
			off += r;
		else if (r < 0 && errno != EAGAIN && errno != EINTR) {
			wl_fail("read %s: %s", what, strerror(errno));
			return;
		} else
			wl_sleep_ms(5);
	}
	buf[off] = 0;
	if (off < n)
		wl_fail("read %s: %zu of %zu bytes in 2 s", what, off, n);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);

	int ma = posix_openpt(O_RDWR | O_NOCTTY);
	if (ma < 0 || grantpt(ma) < 0 || unlockpt(ma) < 0)
		wl_die("pair A master");
	char name[64];
	if (ptsname_r(ma, name, sizeof(name)))
		wl_die("ptsname");
	int sa = open(name, O_RDWR);
	if (sa < 0)
		wl_die(name);
	int sa2 = dup(sa);
	if (ioctl(sa, TIOCSCTTY, 0) < 0)
		wl_die("TIOCSCTTY");

	struct termios t;
	if (tcgetattr(sa, &t) < 0)
		wl_die("tcgetattr");
	t.c_iflag &= ~(ICRNL | IXON);
	t.c_iflag |= IGNBRK;
	t.c_lflag &= ~(ICANON | ECHO | IEXTEN);
	t.c_lflag |= ISIG;
	t.c_oflag |= OPOST | ONLCR;
	t.c_cc[VMIN] = 3;
	t.c_cc[VTIME] = 7;
	t.c_cc[VINTR] = 7;
	if (tcsetattr(sa, TCSANOW, &t) < 0)
		wl_die("tcsetattr");
	struct termios lk;
	memset(&lk, 0, sizeof(lk));
	lk.c_lflag = ECHO;
	if (ioctl(ma, TIOCSLCKTRMIOS, &lk) < 0)
		wl_die("TIOCSLCKTRMIOS");
	struct winsize ws = { .ws_row = 37, .ws_col = 123, .ws_xpixel = 5, .ws_ypixel = 9 };
	if (ioctl(ma, TIOCSWINSZ, &ws) < 0)
		wl_die("TIOCSWINSZ");
	if (ioctl(sa, TIOCEXCL) < 0)
		wl_die("TIOCEXCL");

	int mb = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	int one = 1;
	if (mb < 0 || ioctl(mb, TIOCPKT, &one) < 0)
		wl_die("pair B");
	int ib = get_int(mb, TIOCGPTN, "TIOCGPTN B");

	/* Pair A: bytes left buffered both ways. */
	write_all(ma, "abc", 3, "input for pair A's slave");
	write_all(sa2, "hi\n", 3, "output for pair A's master");

	/* Pair C: canonical, echoing; a line and a half typed, output waiting. */
	int mc = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (mc < 0 || grantpt(mc) < 0 || unlockpt(mc) < 0)
		wl_die("pair C master");
	char namec[64];
	if (ptsname_r(mc, namec, sizeof(namec)))
		wl_die("ptsname C");
	int sc = open(namec, O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (sc < 0)
		wl_die(namec);
	write_all(mc, "line one\npartial", 16, "input for pair C's slave");
	/* The line discipline takes input, and echoes it, asynchronously:
	 * the output must come after the echo. */
	struct pollfd pc[2] = { { .fd = sc, .events = POLLIN }, { .fd = mc, .events = POLLIN } };
	if (poll(&pc[0], 1, 2000) != 1 || poll(&pc[1], 1, 2000) != 1)
		wl_die("pair C's line never reached the slave, or its echo the master");
	wl_sleep_ms(20);
	write_all(sc, "pending output\n", 15, "output for pair C's master");
	wl_sleep_ms(20);

	wl_ready("name %s\nindexB %d\n", name, ib);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	/* Pair A: the same pty, at the same index. */
	char now[64];
	if (ptsname_r(ma, now, sizeof(now)))
		wl_fail("ptsname: %s", strerror(errno));
	else if (strncmp(now, wl_saved("name"), strlen(now)) != 0 || wl_saved("name")[strlen(now)] != '\n')
		wl_fail("the master's slave is %s, was %.20s", now, wl_saved("name"));
	struct stat st1, st2, stn;
	if (fstat(sa, &st1) || fstat(sa2, &st2) || stat(now, &stn))
		wl_fail("stat the slaves: %s", strerror(errno));
	else if (st1.st_rdev != stn.st_rdev || st2.st_rdev != stn.st_rdev)
		wl_fail("the slave fds are not the master's slave %s", now);
	if (fcntl(sa, F_GETFL) != fcntl(sa2, F_GETFL) || (fcntl(sa, F_SETFL, O_NONBLOCK), !(fcntl(sa2, F_GETFL) & O_NONBLOCK)))
		wl_fail("the dup'ed slave fds no longer share their file");
	fcntl(sa, F_SETFL, 0);

	struct termios r;
	if (tcgetattr(sa, &r) < 0)
		wl_fail("tcgetattr: %s", strerror(errno));
	if (r.c_iflag != t.c_iflag || r.c_oflag != t.c_oflag || r.c_lflag != t.c_lflag || (r.c_cflag & ~CBAUD) != (t.c_cflag & ~CBAUD))
		wl_fail("termios flags i%o o%o c%o l%o, were i%o o%o c%o l%o", r.c_iflag, r.c_oflag, r.c_cflag, r.c_lflag,
			t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag);
	if (r.c_cc[VMIN] != 3 || r.c_cc[VTIME] != 7 || r.c_cc[VINTR] != 7)
		wl_fail("VMIN %d VTIME %d VINTR %d, were 3 7 7", r.c_cc[VMIN], r.c_cc[VTIME], r.c_cc[VINTR]);
	struct termios rl;
	if (ioctl(ma, TIOCGLCKTRMIOS, &rl) < 0 || rl.c_lflag != ECHO)
		wl_fail("locked termios lflag %o, was %o", rl.c_lflag, ECHO);
	struct winsize rw;
	if (ioctl(sa, TIOCGWINSZ, &rw) < 0 || rw.ws_row != 37 || rw.ws_col != 123 || rw.ws_xpixel != 5 || rw.ws_ypixel != 9)
		wl_fail("window %dx%d (%dx%d px), was 37x123 (5x9)", rw.ws_row, rw.ws_col, rw.ws_xpixel, rw.ws_ypixel);
	if (get_int(sa, TIOCGEXCL, "TIOCGEXCL") != 1)
		wl_fail("the slave is no longer in exclusive mode");
	if (get_int(ma, TIOCGPTLCK, "TIOCGPTLCK A") != 0)
		wl_fail("pair A is locked");
	if (get_int(ma, TIOCGPKT, "TIOCGPKT A") != 0)
		wl_fail("pair A is in packet mode");
	if (tcgetsid(sa) != getpid())
		wl_fail("the slave's session is %d, want %d (TIOCSCTTY)", (int)tcgetsid(sa), (int)getpid());
	if (tcgetpgrp(sa) != getpgrp())
		wl_fail("the slave's foreground group is %d, want %d", (int)tcgetpgrp(sa), (int)getpgrp());
	int ctty = open("/dev/tty", O_RDWR);
	if (ctty < 0)
		wl_fail("open /dev/tty: %s", strerror(errno));
	else
		close(ctty);

	/* What was buffered at dump is there once, then bytes flow both
	 * ways through the restored settings. */
	char buf[64];
	read_n(sa, buf, 3, "pair A's buffered input");
	if (memcmp(buf, "abc", 3) != 0)
		wl_fail("pair A's slave read buffered %s, want abc", buf);
	read_n(ma, buf, 4, "pair A's buffered output");
	if (memcmp(buf, "hi\r\n", 4) != 0)
		wl_fail("pair A's master read buffered %s, want hi\\r\\n", buf);
	write_all(ma, "in\r\n", 4, "to the master");
	read_n(sa, buf, 4, "from the slave");
	if (memcmp(buf, "in\r\n", 4) != 0)
		wl_fail("the slave read %s, want in\\r\\n (ICRNL off, raw)", buf);
	write_all(sa2, "out\n", 4, "to the slave");
	read_n(ma, buf, 5, "from the master");
	if (memcmp(buf, "out\r\n", 5) != 0)
		wl_fail("the master read %s, want out\\r\\n (ONLCR)", buf);

	/* Pair B: still locked, still in packet mode. */
	if (get_int(mb, TIOCGPTLCK, "TIOCGPTLCK B") != 1)
		wl_fail("pair B is no longer locked");
	if (get_int(mb, TIOCGPKT, "TIOCGPKT B") != 1)
		wl_fail("pair B is no longer in packet mode");
	if (get_int(mb, TIOCGPTN, "TIOCGPTN B") != (int)wl_saved_num("indexB"))
		wl_fail("pair B has index %d, had %d", get_int(mb, TIOCGPTN, "TIOCGPTN B"), (int)wl_saved_num("indexB"));
	if (!(fcntl(mb, F_GETFL) & O_NONBLOCK))
		wl_fail("pair B's master lost O_NONBLOCK");

	/* Pair C: the echo and the output, once each, translated once. */
	const char *wantc = "line one\r\npartialpending output\r\n";
	char bufc[128];
	read_n(mc, bufc, strlen(wantc), "pair C's buffered output");
	if (strcmp(bufc, wantc) != 0)
		wl_fail("pair C's master read %s, want %s", bufc, wantc);
	wl_sleep_ms(50);
	ssize_t n = read(mc, bufc, sizeof(bufc) - 1);
	if (n > 0) {
		bufc[n] = 0;
		wl_fail("pair C's master read %s more than was buffered", bufc);
	}
	/* One line per read; the partial line waits for its end. */
	n = read(sc, bufc, sizeof(bufc) - 1);
	bufc[n > 0 ? n : 0] = 0;
	if (n != 9 || memcmp(bufc, "line one\n", 9) != 0)
		wl_fail("pair C's slave read %zd bytes %s, want the line \"line one\\n\"", n, bufc);
	n = read(sc, bufc, sizeof(bufc) - 1);
	if (n >= 0 || errno != EAGAIN) {
		bufc[n > 0 ? n : 0] = 0;
		wl_fail("pair C's slave read %zd bytes %s (%s) before its partial line ended, want EAGAIN", n, bufc, n < 0 ? strerror(errno) : "");
	}
	write_all(mc, " done\n", 6, "the end of pair C's line");
	struct pollfd pd = { .fd = sc, .events = POLLIN };
	poll(&pd, 1, 2000);
	n = read(sc, bufc, sizeof(bufc) - 1);
	bufc[n > 0 ? n : 0] = 0;
	if (n != 13 || memcmp(bufc, "partial done\n", 13) != 0)
		wl_fail("pair C's slave read %zd bytes %s, want \"partial done\\n\"", n, bufc);
	read_n(mc, bufc, 7, "pair C's echo");
	if (strcmp(bufc, " done\r\n") != 0)
		wl_fail("pair C's master read %s, want the echo \" done\\r\\n\"", bufc);
	return wl_finish();
}
