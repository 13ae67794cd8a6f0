/*
 * ping: ICMP echo ("ping") sockets, SOCK_DGRAM with IPPROTO_ICMP and
 * IPPROTO_ICMPV6 (net.ipv4.ping_group_range must include the group; the
 * test sets it).
 *
 *   P4  bound to 127.0.0.1 with echo identifier 4242, connected to
 *       127.0.0.1
 *   P6  over IPv6, bound to ::1 with identifier 4343
 *
 * After restore both are ping sockets with their identifiers (the port
 * getsockname reports), P4 is connected (send(2) without an address
 * works), and each sends an echo request
 * to the loopback address and receives the reply.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <linux/icmp.h>
#include <linux/icmpv6.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -1000 - errno;
	return v;
}

static int ident(int fd)
{
	struct sockaddr_in6 a;
	socklen_t len = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	return ntohs(a.sin6_port);
}

/* echo sends an echo request with sequence seq and waits for its reply. */
static int echo(int fd, int v6, const struct sockaddr *to, socklen_t tl, int seq)
{
	struct icmphdr req = { .type = v6 ? ICMPV6_ECHO_REQUEST : ICMP_ECHO, .un.echo.sequence = htons(seq) };
	if ((to ? sendto(fd, &req, sizeof(req), 0, to, tl) : send(fd, &req, sizeof(req), 0)) != sizeof(req))
		return -1;
	for (double end = wl_now() + 5; wl_now() < end;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 500) <= 0)
			continue;
		struct icmphdr rep;
		if (recv(fd, &rep, sizeof(rep), MSG_DONTWAIT) == sizeof(rep) && rep.type == (v6 ? ICMPV6_ECHO_REPLY : ICMP_ECHOREPLY) &&
		    rep.un.echo.sequence == htons(seq))
			return 0;
	}
	errno = ETIMEDOUT;
	return -1;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int p4 = socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP), p6 = socket(AF_INET6, SOCK_DGRAM, IPPROTO_ICMPV6);
	if (p4 < 0 || p6 < 0)
		wl_die("ping socket (is the group in net.ipv4.ping_group_range?)");
	struct sockaddr_in lo = { .sin_family = AF_INET, .sin_port = htons(4242), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_in6 lo6 = { .sin6_family = AF_INET6, .sin6_port = htons(4343), .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	if (bind(p4, (struct sockaddr *)&lo, sizeof(lo)) < 0 || bind(p6, (struct sockaddr *)&lo6, sizeof(lo6)) < 0)
		wl_die("bind");
	lo.sin_port = 0;
	if (connect(p4, (struct sockaddr *)&lo, sizeof(lo)) < 0)
		wl_die("connect");
	if (echo(p4, 0, NULL, 0, 1) < 0)
		wl_die("echo before the dump");

	wl_ready("i4 %d\ni6 %d\n", ident(p4), ident(p6));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (opt(p4, SOL_SOCKET, SO_TYPE) != SOCK_DGRAM || opt(p4, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_ICMP)
		wl_fail("P4 is no ping socket: type %d protocol %d", opt(p4, SOL_SOCKET, SO_TYPE), opt(p4, SOL_SOCKET, SO_PROTOCOL));
	if (opt(p6, SOL_SOCKET, SO_TYPE) != SOCK_DGRAM || opt(p6, SOL_SOCKET, SO_PROTOCOL) != IPPROTO_ICMPV6)
		wl_fail("P6 is no ping socket: type %d protocol %d", opt(p6, SOL_SOCKET, SO_TYPE), opt(p6, SOL_SOCKET, SO_PROTOCOL));
	if (ident(p4) != (int)wl_saved_num("i4"))
		wl_fail("P4 identifier %d, was %llu", ident(p4), wl_saved_num("i4"));
	if (ident(p6) != (int)wl_saved_num("i6"))
		wl_fail("P6 identifier %d, was %llu", ident(p6), wl_saved_num("i6"));
	/* getpeername answers ENOTCONN for a ping socket (no peer port):
	 * send(2) without an address works only if it is connected. */
	if (echo(p4, 0, NULL, 0, 2) < 0)
		wl_fail("P4 echo with send(2), as a connected socket: %s", strerror(errno));
	lo6.sin6_port = 0;
	if (echo(p6, 1, (struct sockaddr *)&lo6, sizeof(lo6), 3) < 0)
		wl_fail("P6 echo: %s", strerror(errno));
	return wl_finish();
}
