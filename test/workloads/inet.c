/*
 * inet: TCP and UDP sockets over IPv4 and IPv6.
 *
 *   L4      TCP listener on 127.0.0.1:<ephemeral>, backlog 7,
 *           SO_REUSEADDR, O_NONBLOCK
 *   L6      TCP listener on [::1]:<ephemeral>, IPV6_V6ONLY
 *   K       TCP socket never bound, SO_KEEPALIVE, TCP_KEEPIDLE 77
 *   UA, UB  UDP sockets bound to 127.0.0.1, UA connected to UB
 *   options SO_PRIORITY, SO_MARK, SO_BINDTODEVICE on UA, a BPF filter on
 *           UB, SO_LINGER, SO_RCVLOWAT, SO_DONTROUTE on K; no socket's
 *           buffer sizes fixed (SO_BUF_LOCK 0)
 *   with the argument "conn" or "ended": C and S, the two ends of a TCP
 *           connection to a listener LC whose connections have a small
 *           receive buffer: C wrote until it could not (bytes queued in
 *           S's receive queue and in C's send queue, some never sent),
 *           S wrote "from s" that C has not read
 *
 *   with "ext": X, a connection accepted from a client outside the tree
 *           (the test), after the port went to DIR/port
 *
 * After restore every address, port and option is the same, the
 * listeners accept new connections that carry bytes, and UA and UB
 * exchange datagrams both ways. With "conn" the connection goes on:
 * every byte C wrote arrives at S in order, C reads "from s", and new
 * bytes go both ways. With "ended" (dumped with --tcp-close) both ends
 * have ended: each reads what it had received and not read yet (S the
 * start of C's bytes, C "from s"), then the end of the stream; writes
 * fail. With "ext" X goes on: what the
 * client sent while the tree was away arrives, and the answer goes back.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static int port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -1;
	return v;
}

static int tcp_listener(int family, int backlog)
{
	int fd = socket(family, SOCK_STREAM, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		wl_die("tcp socket");
	if (family == AF_INET) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			wl_die("bind 127.0.0.1");
	} else {
		if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
			wl_die("IPV6_V6ONLY");
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			wl_die("bind ::1");
	}
	if (listen(fd, backlog) < 0)
		wl_die("listen");
	return fd;
}

static int udp_bound(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("udp bind");
	return fd;
}

static void connect_port(int fd, int family, int port)
{
	if (family == AF_INET) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			wl_fail("connect to 127.0.0.1:%d: %s", port, strerror(errno));
	} else {
		struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT };
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
			wl_fail("connect to [::1]:%d: %s", port, strerror(errno));
	}
}

/* wait_in waits up to 2 s for fd to be readable. */
static int wait_in(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, 2000) == 1;
}

/* serve checks that listener l (of family, on port) takes a new
 * connection that carries bytes. */
static void serve(int l, int family, int port, const char *what)
{
	int c = socket(family, SOCK_STREAM, 0);
	connect_port(c, family, port);
	if (!wait_in(l)) {
		wl_fail("%s: no connection to accept", what);
		close(c);
		return;
	}
	int s = accept(l, NULL, NULL);
	if (s < 0) {
		wl_fail("%s: accept: %s", what, strerror(errno));
		close(c);
		return;
	}
	char buf[8] = { 0 };
	if (write(c, "ping", 4) != 4 || !wait_in(s) || read(s, buf, 4) != 4 || memcmp(buf, "ping", 4))
		wl_fail("%s: the accepted connection did not carry ping (%s)", what, buf);
	close(s);
	close(c);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int conn = argc > 2 && strcmp(argv[2], "conn") == 0;
	int ended = argc > 2 && strcmp(argv[2], "ended") == 0;
	int ext = argc > 2 && strcmp(argv[2], "ext") == 0;

	int l4 = tcp_listener(AF_INET, 7);
	fcntl(l4, F_SETFL, O_NONBLOCK);
	int l6 = tcp_listener(AF_INET6, 5);
	int k = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1, idle = 77;
	if (k < 0 || setsockopt(k, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
	    setsockopt(k, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0)
		wl_die("keepalive socket");
	int ua = udp_bound(), ub = udp_bound();
	connect_port(ua, AF_INET, port_of(ub));

	/* Socket options of every family. */
	int prio = 5, mark = 7, lowat = 3;
	struct linger lg = { .l_onoff = 1, .l_linger = 9 };
	struct sock_filter accept_all[] = { BPF_STMT(BPF_RET | BPF_K, 0xffff) };
	struct sock_fprog fprog = { .len = 1, .filter = accept_all };
	if (setsockopt(ua, SOL_SOCKET, SO_PRIORITY, &prio, sizeof(prio)) || setsockopt(ua, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) ||
	    setsockopt(ua, SOL_SOCKET, SO_BINDTODEVICE, "lo", 3) || setsockopt(ub, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof(fprog)) ||
	    setsockopt(k, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) || setsockopt(k, SOL_SOCKET, SO_RCVLOWAT, &lowat, sizeof(lowat)) ||
	    setsockopt(k, SOL_SOCKET, SO_DONTROUTE, &one, sizeof(one)))
		wl_die("socket options");
	int c = -1, s = -1;
	long sent = 0;
	if (conn || ended) {
		int lc = socket(AF_INET, SOCK_STREAM, 0), small = 4096, sndbuf = 65536;
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		if (lc < 0 || setsockopt(lc, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) < 0 ||
		    bind(lc, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(lc, 1) < 0)
			wl_die("listener LC");
		c = socket(AF_INET, SOCK_STREAM, 0);
		if (c < 0 || setsockopt(c, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) < 0)
			wl_die("socket C");
		connect_port(c, AF_INET, port_of(lc));
		wait_in(lc);
		s = accept(lc, NULL, NULL);
		if (s < 0 || write(s, "from s", 6) != 6)
			wl_die("connection");
		close(lc);
		fcntl(c, F_SETFL, O_NONBLOCK);
		unsigned char chunk[1000];
		for (int stalls = 0; stalls < 20;) {
			for (int i = 0; i < (int)sizeof(chunk); i++)
				chunk[i] = (unsigned char)((sent + i) % 251);
			ssize_t n = write(c, chunk, sizeof(chunk));
			if (n > 0) {
				sent += n;
				stalls = 0;
			} else {
				stalls++;
				wl_sleep_ms(5);
			}
		}
		fcntl(c, F_SETFL, 0);
	}

	int x = -1;
	if (ext) {
		/* A client outside the tree (the test) connects to L4 and says
		 * hello; the port goes out first, in DIR/port. */
		char p[32];
		int n = snprintf(p, sizeof(p), "%d\n", port_of(l4));
		wl_write_file("port", p, n);
		struct pollfd pl = { .fd = l4, .events = POLLIN };
		if (poll(&pl, 1, 10000) != 1 || (x = accept(l4, NULL, NULL)) < 0)
			wl_die("no client from outside in 10 s");
		fcntl(x, F_SETFL, 0);
		char hello[8] = { 0 };
		if (!wait_in(x) || read(x, hello, 5) != 5 || memcmp(hello, "hello", 5))
			wl_die("the client did not say hello");
	}

	wl_ready("p4 %d\np6 %d\nua %d\nub %d\nsent %ld\n", port_of(l4), port_of(l6), port_of(ua), port_of(ub), sent);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	int p4 = (int)wl_saved_num("p4"), p6 = (int)wl_saved_num("p6");
	if (port_of(l4) != p4 || port_of(l6) != p6 || port_of(ua) != (int)wl_saved_num("ua") || port_of(ub) != (int)wl_saved_num("ub"))
		wl_fail("ports %d %d %d %d, were %d %d %llu %llu", port_of(l4), port_of(l6), port_of(ua), port_of(ub), p4, p6,
			wl_saved_num("ua"), wl_saved_num("ub"));
	if (opt(l4, SOL_SOCKET, SO_ACCEPTCONN) != 1 || opt(l6, SOL_SOCKET, SO_ACCEPTCONN) != 1)
		wl_fail("a listener no longer listens");
	if (opt(l4, SOL_SOCKET, SO_REUSEADDR) != 1 || !(fcntl(l4, F_GETFL) & O_NONBLOCK))
		wl_fail("L4 lost SO_REUSEADDR or O_NONBLOCK");
	struct tcp_info ti;
	socklen_t tl = sizeof(ti);
	if (getsockopt(l4, IPPROTO_TCP, TCP_INFO, &ti, &tl) < 0 || ti.tcpi_sacked != 7)
		wl_fail("L4's backlog is %u, was 7", ti.tcpi_sacked);
	if (opt(l6, IPPROTO_IPV6, IPV6_V6ONLY) != 1)
		wl_fail("L6 lost IPV6_V6ONLY");
	if (opt(k, SOL_SOCKET, SO_KEEPALIVE) != 1 || opt(k, IPPROTO_TCP, TCP_KEEPIDLE) != 77)
		wl_fail("K: SO_KEEPALIVE %d, TCP_KEEPIDLE %d; were 1, 77", opt(k, SOL_SOCKET, SO_KEEPALIVE), opt(k, IPPROTO_TCP, TCP_KEEPIDLE));
	if (port_of(k) != 0)
		wl_fail("K is bound to port %d, was never bound", port_of(k));
	if (opt(ua, SOL_SOCKET, SO_PRIORITY) != 5 || opt(ua, SOL_SOCKET, SO_MARK) != 7)
		wl_fail("UA: SO_PRIORITY %d, SO_MARK %d; were 5, 7", opt(ua, SOL_SOCKET, SO_PRIORITY), opt(ua, SOL_SOCKET, SO_MARK));
	char dev[16] = { 0 };
	socklen_t dl = sizeof(dev);
	if (getsockopt(ua, SOL_SOCKET, SO_BINDTODEVICE, dev, &dl) || strcmp(dev, "lo"))
		wl_fail("UA is bound to device \"%s\", was lo", dev);
	socklen_t fl = 0;
	if (getsockopt(ub, SOL_SOCKET, SO_GET_FILTER, NULL, &fl) || fl != 1)
		wl_fail("UB has a filter of %u instructions, had 1", fl);
	struct linger lgot;
	socklen_t ll = sizeof(lgot);
	if (getsockopt(k, SOL_SOCKET, SO_LINGER, &lgot, &ll) || !lgot.l_onoff || lgot.l_linger != 9)
		wl_fail("K: SO_LINGER %d/%d, was 1/9", lgot.l_onoff, lgot.l_linger);
	if (opt(k, SOL_SOCKET, SO_RCVLOWAT) != 3 || opt(k, SOL_SOCKET, SO_DONTROUTE) != 1)
		wl_fail("K: SO_RCVLOWAT %d, SO_DONTROUTE %d; were 3, 1", opt(k, SOL_SOCKET, SO_RCVLOWAT), opt(k, SOL_SOCKET, SO_DONTROUTE));
	/* Buffer sizes nobody fixed are still the kernel's to tune. */
	if (opt(k, SOL_SOCKET, 72 /* SO_BUF_LOCK */) != 0 || opt(l4, SOL_SOCKET, 72) != 0)
		wl_fail("SO_BUF_LOCK of K %d, of L4 %d; were 0", opt(k, SOL_SOCKET, 72), opt(l4, SOL_SOCKET, 72));

	if (conn) {
		/* Every byte C wrote arrives, in order; then both ways again. */
		long want = (long)wl_saved_num("sent"), got = 0, bad = -1;
		unsigned char buf[4096];
		while (got < want && wait_in(s)) {
			ssize_t n = read(s, buf, sizeof(buf));
			if (n <= 0) {
				wl_fail("S: read after %ld of %ld bytes: %s", got, want, n < 0 ? strerror(errno) : "end of file");
				break;
			}
			for (ssize_t i = 0; i < n && bad < 0; i++)
				if (buf[i] != (unsigned char)((got + i) % 251))
					bad = got + i;
			got += n;
		}
		if (got != want || bad >= 0)
			wl_fail("S read %ld of the %ld bytes C wrote, first wrong byte at %ld", got, want, bad);
		char small[16] = { 0 };
		if (!wait_in(c) || read(c, small, 6) != 6 || memcmp(small, "from s", 6))
			wl_fail("C read \"%s\", want \"from s\"", small);
		memset(small, 0, sizeof(small));
		if (write(c, "after", 5) != 5 || !wait_in(s) || read(s, small, 5) != 5 || memcmp(small, "after", 5))
			wl_fail("C -> S after restore: \"%s\"", small);
		memset(small, 0, sizeof(small));
		if (write(s, "back", 4) != 4 || !wait_in(c) || read(c, small, 4) != 4 || memcmp(small, "back", 4))
			wl_fail("S -> C after restore: \"%s\"", small);
	}
	if (ended) {
		/* Ended by --tcp-close: what each end had received can still
		 * be read (S: the start of C's bytes, in order; C: "from s"),
		 * then the stream ends; nothing can be written. */
		unsigned char buf[4096];
		long got = 0;
		fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
		for (;;) {
			ssize_t n = read(s, buf, sizeof(buf));
			if (n <= 0) {
				if (n < 0 && errno != ECONNRESET)
					wl_fail("S: after %ld bytes, read: %s, want the end of the stream", got, strerror(errno));
				break;
			}
			for (ssize_t i = 0; i < n; i++)
				if (buf[i] != (unsigned char)((got + i) % 251)) {
					wl_fail("S: byte %ld is %d, want %ld", got + i, buf[i], (got + i) % 251);
					n = -1;
					break;
				}
			if (n < 0)
				break;
			got += n;
		}
		if (got == 0 || got > sent)
			wl_fail("S read %ld of the %ld bytes C sent, want those queued at S before the dump", got, sent);
		fcntl(c, F_SETFL, fcntl(c, F_GETFL) | O_NONBLOCK);
		memset(buf, 0, sizeof(buf));
		ssize_t n = read(c, buf, sizeof(buf));
		if (n != 6 || memcmp(buf, "from s", 6) != 0)
			wl_fail("C read %zd bytes \"%.*s\", want \"from s\" it had not read", n, n > 0 ? (int)n : 0, buf);
		else if ((n = read(c, buf, sizeof(buf))) != 0 && !(n < 0 && errno == ECONNRESET))
			wl_fail("C after \"from s\": read %zd (%s), want the end of the stream", n, n < 0 ? strerror(errno) : "data");
		if (send(c, "x", 1, MSG_NOSIGNAL) == 1)
			wl_fail("the connecting end could still send after --tcp-close");
		if (send(s, "x", 1, MSG_NOSIGNAL) == 1)
			wl_fail("the accepted end could still send after --tcp-close");
	}
	if (ext) {
		/* What the client sent while this end was away arrives (its
		 * retransmissions got through once restored), and the answer
		 * goes back. */
		char got[16] = { 0 };
		struct pollfd px = { .fd = x, .events = POLLIN };
		if (poll(&px, 1, 15000) != 1 || read(x, got, 6) != 6 || memcmp(got, "during", 6))
			wl_fail("the client's \"during\" did not arrive: \"%s\" (%s)", got, strerror(errno));
		else if (write(x, "got during", 10) != 10)
			wl_fail("answer the client: %s", strerror(errno));
	}
	serve(l4, AF_INET, p4, "L4");
	serve(l6, AF_INET6, p6, "L6");

	char buf[16] = { 0 };
	if (send(ua, "to b", 4, 0) != 4 || !wait_in(ub) || recv(ub, buf, sizeof(buf), 0) != 4 || memcmp(buf, "to b", 4))
		wl_fail("UA -> UB: got %s", buf);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port_of(ua)), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	memset(buf, 0, sizeof(buf));
	if (sendto(ub, "to a", 4, 0, (struct sockaddr *)&a, sizeof(a)) != 4 || !wait_in(ua) || recv(ua, buf, sizeof(buf), 0) != 4 ||
	    memcmp(buf, "to a", 4))
		wl_fail("UB -> UA: got %s", buf);
	return wl_finish();
}
