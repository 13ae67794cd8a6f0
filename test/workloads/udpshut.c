/*
 * udpshut: UDP sockets that were shut down.
 *
 *   UA  bound to 127.0.0.1, connected to UB, shutdown(SHUT_RD)
 *   UB  bound to 127.0.0.1, connected to UA, shutdown(SHUT_RDWR)
 *   UC  bound to 127.0.0.1, connected to UA, not shut down
 *
 * The shutdown state of a UDP socket shows in poll: RCV_SHUTDOWN makes
 * it readable with POLLRDHUP, both directions add POLLHUP. After restore
 * UA and UB poll as they did, UC not at all, and UC can still send to UA.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int udp(void)
{
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("udp socket");
	return fd;
}

static void connect_to(int fd, int to)
{
	struct sockaddr_in a;
	socklen_t l = sizeof(a);
	if (getsockname(to, (struct sockaddr *)&a, &l) < 0 || connect(fd, (struct sockaddr *)&a, l) < 0)
		wl_die("connect");
}

static int events(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN | POLLRDHUP };
	if (poll(&p, 1, 0) < 0)
		return -1;
	return p.revents;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int ua = udp(), ub = udp(), uc = udp();
	connect_to(ua, ub);
	connect_to(ub, ua);
	connect_to(uc, ua);
	if (shutdown(ua, SHUT_RD) < 0 || shutdown(ub, SHUT_RDWR) < 0)
		wl_die("shutdown");
	int ea = events(ua), eb = events(ub), ec = events(uc);
	if (!(ea & POLLRDHUP) || (ea & POLLHUP) || !(eb & POLLHUP) || ec != 0)
		wl_die("poll before the dump does not show the shutdown states");

	wl_ready("ua %d\nub %d\nuc %d\n", ea, eb, ec);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (events(ua) != (int)wl_saved_num("ua"))
		wl_fail("UA (shut down for reading) polls %#x, was %#llx", events(ua), wl_saved_num("ua"));
	if (events(ub) != (int)wl_saved_num("ub"))
		wl_fail("UB (shut down both ways) polls %#x, was %#llx", events(ub), wl_saved_num("ub"));
	if (events(uc) != 0)
		wl_fail("UC (not shut down) polls %#x, was 0", events(uc));
	if (send(uc, "hi", 2, 0) != 2)
		wl_fail("UC could not send: %s", strerror(errno));
	return wl_finish();
}
