/*
 * udplite: UDP-Lite sockets (IPPROTO_UDPLITE).
 *
 *   L1  bound to 127.0.0.1, UDPLITE_RECV_CSCOV 20
 *   L2  bound to 127.0.0.1, connected to L1, UDPLITE_SEND_CSCOV 20
 *   L6  an IPv6 UDP-Lite socket bound to ::1
 *
 * After restore the three are UDP-Lite sockets on the same addresses
 * with the same checksum coverages, and datagrams go from L2 to L1 and
 * back.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef IPPROTO_UDPLITE
#define IPPROTO_UDPLITE 136
#endif
#define UDPLITE_SEND_CSCOV 10
#define UDPLITE_RECV_CSCOV 11

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -1000 - errno;
	return v;
}

static int port_of(int fd)
{
	struct sockaddr_in6 a;
	socklen_t len = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	return ntohs(a.sin6_port); /* sin_port is at the same offset */
}

static int recv_within(int fd, char *buf, size_t cap)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	if (poll(&p, 1, 5000) <= 0)
		return -1;
	return recv(fd, buf, cap, MSG_DONTWAIT);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int l1 = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE), l2 = socket(AF_INET, SOCK_DGRAM, IPPROTO_UDPLITE);
	int l6 = socket(AF_INET6, SOCK_DGRAM, IPPROTO_UDPLITE);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	if (l1 < 0 || l2 < 0 || l6 < 0)
		wl_die("UDP-Lite socket");
	if (bind(l1, (struct sockaddr *)&a, sizeof(a)) < 0 || bind(l2, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    bind(l6, (struct sockaddr *)&a6, sizeof(a6)) < 0)
		wl_die("bind");
	a.sin_port = htons(port_of(l1));
	if (connect(l2, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("connect");
	int cov = 20;
	if (setsockopt(l1, IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV, &cov, sizeof(cov)) < 0 ||
	    setsockopt(l2, IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV, &cov, sizeof(cov)) < 0)
		wl_die("CSCOV");

	wl_ready("p1 %d\np2 %d\np6 %d\n", port_of(l1), port_of(l2), port_of(l6));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	int fds[3] = { l1, l2, l6 };
	const char *names[3] = { "L1", "L2", "L6" }, *keys[3] = { "p1", "p2", "p6" };
	for (int i = 0; i < 3; i++) {
		if (opt(fds[i], SOL_SOCKET, SO_PROTOCOL) != IPPROTO_UDPLITE)
			wl_fail("%s has protocol %d, was UDP-Lite (%d)", names[i], opt(fds[i], SOL_SOCKET, SO_PROTOCOL), IPPROTO_UDPLITE);
		if (port_of(fds[i]) != (int)wl_saved_num(keys[i]))
			wl_fail("%s on port %d, was %llu", names[i], port_of(fds[i]), wl_saved_num(keys[i]));
	}
	if (opt(l1, IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV) != 20)
		wl_fail("L1 UDPLITE_RECV_CSCOV is %d, was 20", opt(l1, IPPROTO_UDPLITE, UDPLITE_RECV_CSCOV));
	if (opt(l2, IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV) != 20)
		wl_fail("L2 UDPLITE_SEND_CSCOV is %d, was 20", opt(l2, IPPROTO_UDPLITE, UDPLITE_SEND_CSCOV));
	char buf[64];
	if (send(l2, "lite", 4, 0) != 4 || recv_within(l1, buf, sizeof(buf)) != 4 || memcmp(buf, "lite", 4) != 0)
		wl_fail("L1 did not get L2's datagram: %s", strerror(errno));
	struct sockaddr_in to;
	socklen_t tl = sizeof(to);
	getsockname(l2, (struct sockaddr *)&to, &tl);
	if (sendto(l1, "back", 4, 0, (struct sockaddr *)&to, tl) != 4 || recv_within(l2, buf, sizeof(buf)) != 4 || memcmp(buf, "back", 4) != 0)
		wl_fail("L2 did not get L1's datagram: %s", strerror(errno));
	return wl_finish();
}
