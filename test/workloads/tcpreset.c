/*
 * tcpreset: a TCP connection reset by its peer, with bytes still unread.
 *
 *   S  accepted from a listener L; its peer C sent "abc", then closed
 *      with SO_LINGER {1, 0}, which resets the connection: S is CLOSED,
 *      "abc" is still in its receive queue
 *
 * After restore S reads "abc", then the end of the stream (or the
 * ECONNRESET still pending); S cannot write; L still accepts.
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

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t al = sizeof(a);
	if (l < 0 || c < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 4) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &al) < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("connect");
	int s = accept(l, NULL, NULL);
	struct linger lg = { 1, 0 };
	if (s < 0 || write(c, "abc", 3) != 3)
		wl_die("write");
	wl_sleep_ms(50);
	if (setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) < 0 || close(c) < 0)
		wl_die("reset");
	for (double end = wl_now() + 5; state(s) != TCP_CLOSE && wl_now() < end;)
		wl_sleep_ms(5);
	if (state(s) != TCP_CLOSE)
		wl_die("S is not closed by the reset");

	wl_ready("port %d\n", ntohs(a.sin_port));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	char buf[16] = { 0 };
	fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK);
	ssize_t n = read(s, buf, sizeof(buf));
	if (n != 3 || memcmp(buf, "abc", 3) != 0)
		wl_fail("S read %zd bytes \"%.*s\" (%s), want the \"abc\" it had not read", n, n > 0 ? (int)n : 0, buf, n < 0 ? strerror(errno) : "");
	n = read(s, buf, sizeof(buf));
	if (n != 0 && !(n < 0 && errno == ECONNRESET))
		wl_fail("S after \"abc\": read %zd (%s), want the end of the stream", n, n < 0 ? strerror(errno) : "data");
	if (write(s, "x", 1) != -1)
		wl_fail("S could write after the reset");
	int c2 = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_port = htons(wl_saved_num("port"));
	if (c2 < 0 || connect(c2, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_fail("connect to L after restore: %s", strerror(errno));
	else {
		struct pollfd p = { .fd = l, .events = POLLIN };
		if (poll(&p, 1, 5000) != 1 || accept(l, NULL, NULL) < 0)
			wl_fail("L accepts nothing after restore");
	}
	return wl_finish();
}
