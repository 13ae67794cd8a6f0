/*
 * tcpaccept: connections waiting in a listener's accept queue, their
 * other ends in the tree.
 *
 *   L   a listener on 127.0.0.1 (IPv4) and one on ::1 (IPv6), nothing
 *       accepted yet
 *   A1  connected to L, wrote "first" (queued at L's end)
 *   A2  connected to L, wrote "second", then shutdown(SHUT_WR): its end
 *       in L's queue has the FIN after the bytes (CLOSE_WAIT)
 *   B   connected to L6, wrote nothing
 *
 * After restore, before any accept: L's queue holds 2 connections (TCP_INFO
 * tcpi_unacked) and L6's 1. accept() returns A1's connection (its peer is A1's
 * address), which reads "first", then A2's, which reads "second" and the
 * end of the stream; replies reach A1 and A2; A2 cannot write; B's
 * connection carries bytes both ways; L accepts a new connection.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static int tinfo(int fd, struct tcp_info *ti)
{
	socklen_t l = sizeof(*ti);
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &l);
}

static int queued(int l)
{
	struct tcp_info ti;
	return tinfo(l, &ti) < 0 ? -1 : (int)ti.tcpi_unacked;
}

/* outq: bytes (and FIN) sent and not acknowledged yet. */
static int outq(int fd)
{
	int n;
	return ioctl(fd, SIOCOUTQ, &n) < 0 ? -1 : n;
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

/* read_all reads exactly n bytes (5 s for each piece). */
static ssize_t read_all(int fd, char *buf, size_t n)
{
	size_t have = 0;
	while (have < n) {
		ssize_t r = read_within(fd, buf + have, n - have);
		if (r <= 0)
			return have ? (ssize_t)have : r;
		have += r;
	}
	return have;
}

/* accept_within accepts from l, waiting up to 5 s. */
static int accept_within(int l, struct sockaddr *sa, socklen_t *len)
{
	struct pollfd p = { .fd = l, .events = POLLIN };
	if (poll(&p, 1, 5000) != 1) {
		errno = ETIMEDOUT;
		return -1;
	}
	return accept(l, sa, len);
}

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	return ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* check_conn accepts the next connection of l, which must come from the
 * socket c, read want (then the end of the stream if eof), and reply. */
static void check_conn(const char *name, int l, int c, const char *want, int eof)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int s = accept_within(l, (struct sockaddr *)&ss, &len);
	if (s < 0) {
		wl_fail("%s: accept: %s", name, strerror(errno));
		return;
	}
	int peer = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) : ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (peer != port_of(c))
		wl_fail("%s: accept returned a connection from port %d, want %d (its client)", name, peer, port_of(c));
	char buf[64] = { 0 };
	size_t n = strlen(want);
	ssize_t r = read_all(s, buf, n);
	if (r != (ssize_t)n || memcmp(buf, want, n) != 0)
		wl_fail("%s: read %zd bytes \"%.*s\" (%s), want \"%s\"", name, r, r > 0 ? (int)r : 0, buf, r < 0 ? strerror(errno) : "", want);
	if (eof) {
		r = read_within(s, buf, sizeof(buf));
		if (r != 0)
			wl_fail("%s: after \"%s\" read %zd (%s), want 0: the end of the stream", name, want, r, r < 0 ? strerror(errno) : "data");
	}
	if (write(s, "reply", 5) != 5)
		wl_fail("%s: write the reply: %s", name, strerror(errno));
	r = read_all(c, buf, 5);
	if (r != 5 || memcmp(buf, "reply", 5) != 0)
		wl_fail("%s: the client read %zd bytes \"%.*s\", want \"reply\"", name, r, r > 0 ? (int)r : 0, buf);
	if (eof && (write(c, "x", 1) != -1 || errno != EPIPE))
		wl_fail("%s: the client could write after shutdown(SHUT_WR)", name);
	if (!eof) {
		if (write(c, "more", 4) != 4)
			wl_fail("%s: the client's write: %s", name, strerror(errno));
		r = read_all(s, buf, 4);
		if (r != 4 || memcmp(buf, "more", 4) != 0)
			wl_fail("%s: the server read %zd bytes, want \"more\"", name, r);
	}
	close(s);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int l = socket(AF_INET, SOCK_STREAM, 0), l6 = socket(AF_INET6, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	socklen_t al = sizeof(a), al6 = sizeof(a6);
	if (l < 0 || l6 < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 8) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0 || bind(l6, (struct sockaddr *)&a6, sizeof(a6)) < 0 ||
	    listen(l6, 8) < 0 || getsockname(l6, (struct sockaddr *)&a6, &al6) < 0)
		wl_die("listen");
	int a1 = socket(AF_INET, SOCK_STREAM, 0), a2 = socket(AF_INET, SOCK_STREAM, 0), b = socket(AF_INET6, SOCK_STREAM, 0);
	if (a1 < 0 || a2 < 0 || b < 0 || connect(a1, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    connect(a2, (struct sockaddr *)&a, sizeof(a)) < 0 || connect(b, (struct sockaddr *)&a6, sizeof(a6)) < 0)
		wl_die("connect");
	if (write(a1, "first", 5) != 5 || write(a2, "second", 6) != 6 || shutdown(a2, SHUT_WR) < 0)
		wl_die("write");
	for (double end = wl_now() + 5; (queued(l) != 2 || queued(l6) != 1 || outq(a1) || outq(a2)) && wl_now() < end;)
		wl_sleep_ms(5);
	if (queued(l) != 2 || queued(l6) != 1 || outq(a1) || outq(a2))
		wl_die("queues before the dump");

	wl_ready("port %d\nport6 %d\na1 %d\na2 %d\n", ntohs(a.sin_port), ntohs(a6.sin6_port), port_of(a1), port_of(a2));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (port_of(l) != (int)wl_saved_num("port") || port_of(l6) != (int)wl_saved_num("port6"))
		wl_fail("the listeners are on ports %d and %d, were %d and %d", port_of(l), port_of(l6), (int)wl_saved_num("port"), (int)wl_saved_num("port6"));
	if (port_of(a1) != (int)wl_saved_num("a1") || port_of(a2) != (int)wl_saved_num("a2"))
		wl_fail("the clients are on ports %d and %d, were %d and %d", port_of(a1), port_of(a2), (int)wl_saved_num("a1"), (int)wl_saved_num("a2"));
	if (queued(l) != 2 || queued(l6) != 1)
		wl_fail("before any accept, the queues hold %d and %d connections, want 2 and 1", queued(l), queued(l6));
	check_conn("A1", l, a1, "first", 0);
	check_conn("A2", l, a2, "second", 1);
	check_conn("B", l6, b, "", 0);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_fail("a new connection to the restored listener: %s", strerror(errno));
	else {
		if (write(c, "new", 3) != 3)
			wl_fail("new connection: write: %s", strerror(errno));
		check_conn("new", l, c, "new", 0);
	}
	return wl_finish();
}
