/*
 * tcpextfin: a connection whose peer, outside the tree (the test), sent
 * "hello" and its FIN: the accepted end S is in CLOSE_WAIT with "hello"
 * unread. The listener's port goes to DIR/port before ready. With the
 * argument "6", over IPv6 (::1).
 *
 * After restore: S reads "hello", then the end of the stream; S writes
 * "bye" and shuts down, which the peer reads.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

static int state(int fd)
{
	struct tcp_info ti;
	socklen_t l = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l) < 0)
		return -1;
	return ti.tcpi_state;
}

static int inq(int fd)
{
	int n;
	return ioctl(fd, SIOCINQ, &n) < 0 ? -1 : n;
}

static ssize_t read_within(int fd, char *buf, size_t cap)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 10000) != 1) {
		errno = ETIMEDOUT;
		return -1;
	}
	return read(fd, buf, cap);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int v6 = argc > 2 && strcmp(argv[2], "6") == 0;
	int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	struct sockaddr *sa = v6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a;
	socklen_t al = v6 ? sizeof(a6) : sizeof(a);
	if (l < 0 || bind(l, sa, al) < 0 || listen(l, 1) < 0 || getsockname(l, sa, &al) < 0)
		wl_die("listen");
	char port[16];
	int n = snprintf(port, sizeof(port), "%d\n", ntohs(v6 ? a6.sin6_port : a.sin_port));
	wl_write_file("port", port, n);
	int s = accept(l, NULL, NULL);
	if (s < 0)
		wl_die("accept");
	close(l);
	for (double end = wl_now() + 10; (state(s) != TCP_CLOSE_WAIT || inq(s) != 5) && wl_now() < end;)
		wl_sleep_ms(5);
	if (state(s) != TCP_CLOSE_WAIT || inq(s) != 5)
		wl_die("CLOSE_WAIT with 5 bytes before the dump");
	wl_ready("s %d\n", state(s));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (state(s) != TCP_CLOSE_WAIT)
		wl_fail("S in state %d after restore, want CLOSE_WAIT (%d)", state(s), TCP_CLOSE_WAIT);
	char buf[16] = { 0 };
	ssize_t r = read_within(s, buf, sizeof(buf));
	if (r != 5 || memcmp(buf, "hello", 5) != 0)
		wl_fail("S read %zd bytes \"%.*s\" (%s), want \"hello\"", r, r > 0 ? (int)r : 0, buf, r < 0 ? strerror(errno) : "");
	r = read_within(s, buf, sizeof(buf));
	if (r != 0)
		wl_fail("S after \"hello\": read %zd (%s), want 0, the end of the stream", r, r < 0 ? strerror(errno) : "data");
	if (write(s, "bye", 3) != 3 || shutdown(s, SHUT_WR) < 0)
		wl_fail("S write and shutdown: %s", strerror(errno));
	return wl_finish();
}
