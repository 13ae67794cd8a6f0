/*
 * tcpstates MODE: a TCP connection, both ends in the tree, in a state
 * where a FIN waits behind bytes the peer has no room for. C connected
 * to a listener, S accepted; small buffers, and the reader never reads
 * before the dump, so the writer's window closes:
 *
 *   fin1     C filled S's window, then shutdown(C, SHUT_WR): C is in
 *            FIN_WAIT1 (its FIN behind unsent bytes), S in ESTABLISHED
 *   closing  as fin1, then shutdown(S, SHUT_WR): S's FIN reaches C,
 *            whose own FIN is still unsent: C is in CLOSING, S in
 *            FIN_WAIT2
 *   lastack  shutdown(C, SHUT_WR) first (S in CLOSE_WAIT, C in
 *            FIN_WAIT2), then S filled C's window and shut down: S is in
 *            LAST_ACK, its FIN behind unsent bytes
 *
 * After restore the reader reads every byte written (a pattern), then the
 * end of the stream; the other end sees the end of the stream too; the
 * states move on as the kernel moves them (FIN_WAIT1 to FIN_WAIT2, ...).
 */
#include "workload.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>

static int state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
		return -1;
	return ti.tcpi_state;
}

static unsigned char pat(size_t i)
{
	return (unsigned char)(i * 7 + 3);
}

/* fill writes the pattern to fd (non-blocking) until the peer's window
 * and fd's send buffer are full; returns how much it wrote. */
static size_t fill(int fd)
{
	unsigned char buf[1024];
	size_t off = 0;
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl | O_NONBLOCK);
	for (double end = wl_now() + 5; wl_now() < end;) {
		for (size_t i = 0; i < sizeof(buf); i++)
			buf[i] = pat(off + i);
		ssize_t n = write(fd, buf, sizeof(buf));
		if (n > 0) {
			off += n;
			continue;
		}
		if (n < 0 && errno != EAGAIN)
			wl_die("fill");
		/* Full for 200 ms: the peer's window is closed. */
		struct pollfd p = { .fd = fd, .events = POLLOUT };
		if (poll(&p, 1, 200) == 0)
			break;
	}
	fcntl(fd, F_SETFL, fl);
	return off;
}

/* drain reads fd until the end of the stream (10 s at most) and checks
 * it got the pattern's first want bytes. */
static void drain(const char *name, int fd, size_t want)
{
	unsigned char buf[4096];
	size_t off = 0;
	double end = wl_now() + 10;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int ms = (int)((end - wl_now()) * 1000);
		if (ms <= 0 || poll(&p, 1, ms) != 1) {
			wl_fail("%s: no end of the stream within 10 s, after %zu bytes of %zu", name, off, want);
			return;
		}
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0) {
			wl_fail("%s: read after %zu bytes: %s", name, off, strerror(errno));
			return;
		}
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++) {
			if (off + i >= want || buf[i] != pat(off + i)) {
				wl_fail("%s: byte %zu is %u, want %s", name, off + i, buf[i], off + i >= want ? "none" : "the pattern");
				return;
			}
		}
		off += n;
	}
	if (off != want)
		wl_fail("%s: read %zu bytes, then the end of the stream; want %zu", name, off, want);
}

/* eof expects the end of the stream on fd within 10 s, no bytes. */
static void eof(const char *name, int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;
	if (poll(&p, 1, 10000) != 1)
		wl_fail("%s: no end of the stream within 10 s", name);
	else if (read(fd, &c, 1) != 0)
		wl_fail("%s: read bytes or an error, want the end of the stream: %s", name, strerror(errno));
}

/* wait_states waits up to 5 s for C and S to be in cs and ss. */
static int wait_states(int c, int cs, int s, int ss)
{
	for (double end = wl_now() + 5; (state(c) != cs || state(s) != ss) && wl_now() < end;)
		wl_sleep_ms(5);
	return state(c) == cs && state(s) == ss;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	const char *mode = argc > 2 ? argv[2] : "";
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
	int small = 4096;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	/* Small buffers on both ends (S inherits the listener's). */
	if (l < 0 || c < 0 || setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) < 0 ||
	    setsockopt(l, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) < 0 ||
	    setsockopt(c, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) < 0 ||
	    setsockopt(c, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)) < 0 ||
	    bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("connect");
	int s = accept(l, NULL, NULL);
	if (s < 0)
		wl_die("accept");
	size_t n = 0;
	if (strcmp(mode, "fin1") == 0 || strcmp(mode, "closing") == 0) {
		n = fill(c);
		if (shutdown(c, SHUT_WR) < 0)
			wl_die("shutdown C");
		if (!wait_states(c, TCP_FIN_WAIT1, s, TCP_ESTABLISHED))
			wl_die("FIN_WAIT1 / ESTABLISHED before the dump");
		if (strcmp(mode, "closing") == 0) {
			if (shutdown(s, SHUT_WR) < 0)
				wl_die("shutdown S");
			if (!wait_states(c, TCP_CLOSING, s, TCP_FIN_WAIT2))
				wl_die("CLOSING / FIN_WAIT2 before the dump");
		}
	} else if (strcmp(mode, "lastack") == 0) {
		if (shutdown(c, SHUT_WR) < 0 || !wait_states(c, TCP_FIN_WAIT2, s, TCP_CLOSE_WAIT))
			wl_die("FIN_WAIT2 / CLOSE_WAIT before the dump");
		n = fill(s);
		if (shutdown(s, SHUT_WR) < 0)
			wl_die("shutdown S");
		if (!wait_states(c, TCP_FIN_WAIT2, s, TCP_LAST_ACK))
			wl_die("FIN_WAIT2 / LAST_ACK before the dump");
	} else {
		errno = EINVAL;
		wl_die("mode: fin1, closing or lastack");
	}
	if (n < 4096)
		wl_die("filled too little");
	wl_ready("mode %s\nbytes %zu\nc %d\ns %d\n", mode, n, state(c), state(s));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (strcmp(mode, "fin1") == 0) {
		if (state(c) != TCP_FIN_WAIT1 && state(c) != TCP_FIN_WAIT2)
			wl_fail("C in state %d after restore, want FIN_WAIT1 or FIN_WAIT2", state(c));
		drain("S", s, n);
		if (write(s, "bye", 3) != 3)
			wl_fail("S write: %s", strerror(errno));
		char buf[4] = { 0 };
		struct pollfd p = { .fd = c, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1 || read(c, buf, 3) != 3 || memcmp(buf, "bye", 3) != 0)
			wl_fail("C read \"%s\", want \"bye\"", buf);
		if (!wait_states(c, TCP_FIN_WAIT2, s, TCP_CLOSE_WAIT))
			wl_fail("states %d %d once S read all, want FIN_WAIT2 and CLOSE_WAIT", state(c), state(s));
	} else if (strcmp(mode, "closing") == 0) {
		eof("C", c);
		drain("S", s, n);
	} else {
		eof("S", s);
		drain("C", c, n);
		if (write(s, "x", 1) != -1 || errno != EPIPE)
			wl_fail("S could write after shutdown(SHUT_WR)");
	}
	return wl_finish();
}
