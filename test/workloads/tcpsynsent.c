/*
 * tcpsynsent: a TCP socket in SYN_SENT. argv[2] is the port of a
 * listener on 127.0.0.1, outside the tree, whose full accept queue drops
 * every SYN: the non-blocking connect stays in progress.
 *
 * After restore: the socket is still connecting from the same port;
 * once the peer makes room (the test accepts what filled its queue) the
 * connection completes (poll says writable, SO_ERROR 0), the workload
 * writes "hello" and reads "world".
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

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	return ntohs(a.sin_port);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3) {
		errno = EINVAL;
		wl_die("usage: tcpsynsent DIR PORT");
	}
	signal(SIGPIPE, SIG_IGN);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(atoi(argv[2])) };
	int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (c < 0 || (connect(c, (struct sockaddr *)&a, sizeof(a)) == 0 || errno != EINPROGRESS))
		wl_die("connect in progress");
	/* Long enough for the SYN to have been dropped. */
	wl_sleep_ms(100);
	if (state(c) != TCP_SYN_SENT)
		wl_die("not in SYN_SENT");
	wl_ready("local %d\n", port_of(c));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (port_of(c) != (int)wl_saved_num("local"))
		wl_fail("the socket is on port %d, was %d", port_of(c), (int)wl_saved_num("local"));
	struct pollfd p = { .fd = c, .events = POLLOUT };
	int n = poll(&p, 1, 30000);
	int err = -1;
	socklen_t el = sizeof(err);
	getsockopt(c, SOL_SOCKET, SO_ERROR, &err, &el);
	if (n != 1 || err != 0) {
		wl_fail("the connection did not complete in 30 s (poll %d, SO_ERROR %s, state %d)", n, strerror(err), state(c));
		return wl_finish();
	}
	if (state(c) != TCP_ESTABLISHED)
		wl_fail("the connection is in state %d once writable, want ESTABLISHED", state(c));
	int fl = fcntl(c, F_GETFL);
	if (!(fl & O_NONBLOCK))
		wl_fail("the socket lost O_NONBLOCK");
	fcntl(c, F_SETFL, fl & ~O_NONBLOCK);
	if (write(c, "hello", 5) != 5)
		wl_fail("write: %s", strerror(errno));
	struct timeval tv = { .tv_sec = 10 };
	setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	char buf[8] = { 0 };
	size_t have = 0;
	ssize_t r;
	while (have < 5 && (r = read(c, buf + have, 5 - have)) > 0)
		have += r;
	if (have != 5 || memcmp(buf, "world", 5) != 0)
		wl_fail("read \"%.*s\", want \"world\"", (int)have, buf);
	return wl_finish();
}
