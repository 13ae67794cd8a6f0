/*
 * tcphalf: a half-closed TCP connection, both ends in the tree.
 *
 *   C  connected to a listener's S; wrote "c-data", then shutdown(C,
 *      SHUT_WR): C is in FIN_WAIT2
 *   S  accepted; wrote "s-data" that C has not read; has not read
 *      "c-data" nor the end of the stream: S is in CLOSE_WAIT
 *
 * After restore (the states may take a retransmission to come back):
 * S reads "c-data", then the end of the stream; S can still write, and
 * C reads "s-data" then what S wrote; C cannot write; the states are
 * FIN_WAIT2 and CLOSE_WAIT again.
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

/* read_within reads up to cap bytes, waiting up to 5 s for the first. */
static ssize_t read_within(int fd, char *buf, size_t cap)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1) {
		errno = ETIMEDOUT;
		return -1;
	}
	return read(fd, buf, cap);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 1) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("connect");
	int s = accept(l, NULL, NULL);
	if (s < 0 || write(c, "c-data", 6) != 6 || write(s, "s-data", 6) != 6 || shutdown(c, SHUT_WR) < 0)
		wl_die("half-close");
	for (double end = wl_now() + 5; (state(c) != TCP_FIN_WAIT2 || state(s) != TCP_CLOSE_WAIT) && wl_now() < end;)
		wl_sleep_ms(5);
	if (state(c) != TCP_FIN_WAIT2 || state(s) != TCP_CLOSE_WAIT)
		wl_die("states before the dump");

	wl_ready("c %d\ns %d\n", state(c), state(s));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	char buf[64] = { 0 };
	ssize_t n = read_within(s, buf, sizeof(buf));
	if (n != 6 || memcmp(buf, "c-data", 6) != 0)
		wl_fail("S read %zd bytes \"%.*s\" (%s), want \"c-data\"", n, n > 0 ? (int)n : 0, buf, n < 0 ? strerror(errno) : "");
	n = read_within(s, buf, sizeof(buf));
	if (n != 0)
		wl_fail("S after \"c-data\": read %zd (%s), want 0, the end of the stream", n, n < 0 ? strerror(errno) : "data");
	if (write(s, "more", 4) != 4)
		wl_fail("S write after restore: %s", strerror(errno));
	char got[16] = { 0 };
	size_t have = 0;
	while (have < 10 && (n = read_within(c, got + have, 10 - have)) > 0)
		have += n;
	if (have != 10 || memcmp(got, "s-datamore", 10) != 0)
		wl_fail("C read \"%.*s\", want \"s-datamore\"", (int)have, got);
	if (write(c, "x", 1) != -1 || errno != EPIPE)
		wl_fail("C could write after shutdown(SHUT_WR): %s", strerror(errno));
	for (double end = wl_now() + 5; (state(c) != TCP_FIN_WAIT2 || state(s) != TCP_CLOSE_WAIT) && wl_now() < end;)
		wl_sleep_ms(5);
	if (state(c) != TCP_FIN_WAIT2 || state(s) != TCP_CLOSE_WAIT)
		wl_fail("states %d %d after restore, were FIN_WAIT2 (%d) and CLOSE_WAIT (%d)", state(c), state(s), TCP_FIN_WAIT2, TCP_CLOSE_WAIT);
	return wl_finish();
}
