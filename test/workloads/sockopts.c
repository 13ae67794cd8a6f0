/*
 * sockopts: socket options that restore must set again, some of them
 * before bind.
 *
 *   T1, T2  TCP listeners sharing 127.0.0.1:<port> with SO_REUSEPORT
 *           (T1 also SO_REUSEADDR, T2 not): the second binds beside the
 *           first only if it has SO_REUSEPORT when it binds
 *   U1, U2  UDP sockets sharing 127.0.0.1:<port2> with SO_REUSEPORT
 *   V4      UDP socket with IP_TOS 0x28, IP_TTL 33, IP_PKTINFO,
 *           IP_RECVERR, IP_RECVTOS, IP_MTU_DISCOVER DO, IP_MULTICAST_TTL
 *           5, IP_MULTICAST_LOOP 0, IP_TRANSPARENT, bound with
 *           IP_FREEBIND to 192.0.2.1 (an address no interface has)
 *   V6      UDP socket over IPv6, IPV6_V6ONLY, IPV6_TCLASS 0x40,
 *           IPV6_UNICAST_HOPS 44, IPV6_RECVPKTINFO, IPV6_RECVERR,
 *           IPV6_MULTICAST_HOPS 7
 *   TT      TCP socket not bound, IP_TOS 0x10, IP_TTL 99
 *   P       a unix datagram socketpair end with SO_PASSSEC
 *
 * After restore every option reads as it was, T1 and T2 still share
 * their port, and a connection to it is accepted by one of them.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

static int port_of(int fd)
{
	struct sockaddr_in a;
	socklen_t len = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		return -1;
	return ntohs(a.sin_port);
}

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -1000 - errno;
	return v;
}

static void set(int fd, int level, int name, int v, const char *what)
{
	if (setsockopt(fd, level, name, &v, sizeof(v)) < 0)
		wl_die(what);
}

static void bind4(int fd, const char *addr, int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	inet_pton(AF_INET, addr, &a.sin_addr);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("bind");
}

struct want {
	const char *name;
	int *fd, level, opt, val;
};

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int t1 = socket(AF_INET, SOCK_STREAM, 0), t2 = socket(AF_INET, SOCK_STREAM, 0);
	int u1 = socket(AF_INET, SOCK_DGRAM, 0), u2 = socket(AF_INET, SOCK_DGRAM, 0);
	int v4 = socket(AF_INET, SOCK_DGRAM, 0), v6 = socket(AF_INET6, SOCK_DGRAM, 0);
	int tt = socket(AF_INET, SOCK_STREAM, 0);
	int p[2];
	if (t1 < 0 || t2 < 0 || u1 < 0 || u2 < 0 || v4 < 0 || v6 < 0 || tt < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, p) < 0)
		wl_die("socket");

	set(t1, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
	set(t1, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	set(t2, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	bind4(t1, "127.0.0.1", 0);
	int port = port_of(t1);
	bind4(t2, "127.0.0.1", port);
	if (listen(t1, 5) < 0 || listen(t2, 5) < 0)
		wl_die("listen");
	set(u1, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	set(u2, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
	bind4(u1, "127.0.0.1", 0);
	int port2 = port_of(u1);
	bind4(u2, "127.0.0.1", port2);

	set(v4, IPPROTO_IP, IP_FREEBIND, 1, "IP_FREEBIND");
	bind4(v4, "192.0.2.1", 0);
	int port3 = port_of(v4);

	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	set(v6, IPPROTO_IPV6, IPV6_V6ONLY, 1, "IPV6_V6ONLY");
	if (bind(v6, (struct sockaddr *)&a6, sizeof(a6)) < 0)
		wl_die("bind ::1");

	struct want w[] = {
		{ "T1 SO_REUSEADDR", &t1, SOL_SOCKET, SO_REUSEADDR, 1 },
		{ "T1 SO_REUSEPORT", &t1, SOL_SOCKET, SO_REUSEPORT, 1 },
		{ "T2 SO_REUSEADDR", &t2, SOL_SOCKET, SO_REUSEADDR, 0 },
		{ "T2 SO_REUSEPORT", &t2, SOL_SOCKET, SO_REUSEPORT, 1 },
		{ "U1 SO_REUSEPORT", &u1, SOL_SOCKET, SO_REUSEPORT, 1 },
		{ "U2 SO_REUSEPORT", &u2, SOL_SOCKET, SO_REUSEPORT, 1 },
		{ "U2 SO_REUSEADDR", &u2, SOL_SOCKET, SO_REUSEADDR, 0 },
		{ "V4 IP_TOS", &v4, IPPROTO_IP, IP_TOS, 0x28 },
		{ "V4 IP_TTL", &v4, IPPROTO_IP, IP_TTL, 33 },
		{ "V4 IP_PKTINFO", &v4, IPPROTO_IP, IP_PKTINFO, 1 },
		{ "V4 IP_RECVERR", &v4, IPPROTO_IP, IP_RECVERR, 1 },
		{ "V4 IP_RECVTOS", &v4, IPPROTO_IP, IP_RECVTOS, 1 },
		{ "V4 IP_MTU_DISCOVER", &v4, IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO },
		{ "V4 IP_MULTICAST_TTL", &v4, IPPROTO_IP, IP_MULTICAST_TTL, 5 },
		{ "V4 IP_MULTICAST_LOOP", &v4, IPPROTO_IP, IP_MULTICAST_LOOP, 0 },
		{ "V4 IP_TRANSPARENT", &v4, IPPROTO_IP, IP_TRANSPARENT, 1 },
		{ "V4 IP_FREEBIND", &v4, IPPROTO_IP, IP_FREEBIND, 1 },
		{ "V6 IPV6_V6ONLY", &v6, IPPROTO_IPV6, IPV6_V6ONLY, 1 },
		{ "V6 IPV6_TCLASS", &v6, IPPROTO_IPV6, IPV6_TCLASS, 0x40 },
		{ "V6 IPV6_UNICAST_HOPS", &v6, IPPROTO_IPV6, IPV6_UNICAST_HOPS, 44 },
		{ "V6 IPV6_RECVPKTINFO", &v6, IPPROTO_IPV6, IPV6_RECVPKTINFO, 1 },
		{ "V6 IPV6_RECVERR", &v6, IPPROTO_IPV6, IPV6_RECVERR, 1 },
		{ "V6 IPV6_MULTICAST_HOPS", &v6, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 7 },
		{ "TT IP_TOS", &tt, IPPROTO_IP, IP_TOS, 0x10 },
		{ "TT IP_TTL", &tt, IPPROTO_IP, IP_TTL, 99 },
		{ "P SO_PASSSEC", &p[0], SOL_SOCKET, SO_PASSSEC, 1 },
	};
	int n = sizeof(w) / sizeof(w[0]);
	for (int i = 0; i < n; i++) {
		if (w[i].level == SOL_SOCKET && (w[i].opt == SO_REUSEADDR || w[i].opt == SO_REUSEPORT))
			continue; /* set before bind above */
		if (w[i].opt == IP_FREEBIND || (w[i].level == IPPROTO_IPV6 && w[i].opt == IPV6_V6ONLY))
			continue;
		set(*w[i].fd, w[i].level, w[i].opt, w[i].val, w[i].name);
	}
	for (int i = 0; i < n; i++)
		if (opt(*w[i].fd, w[i].level, w[i].opt) != w[i].val)
			wl_die(w[i].name);

	wl_ready("port %d\nport2 %d\nport3 %d\n", port, port2, port3);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	for (int i = 0; i < n; i++) {
		int v = opt(*w[i].fd, w[i].level, w[i].opt);
		if (v != w[i].val)
			wl_fail("%s is %d, was %d", w[i].name, v, w[i].val);
	}
	if (port_of(t1) != (int)wl_saved_num("port") || port_of(t2) != (int)wl_saved_num("port"))
		wl_fail("T1, T2 on ports %d, %d, were both on %llu", port_of(t1), port_of(t2), wl_saved_num("port"));
	if (port_of(u1) != (int)wl_saved_num("port2") || port_of(u2) != (int)wl_saved_num("port2"))
		wl_fail("U1, U2 on ports %d, %d, were both on %llu", port_of(u1), port_of(u2), wl_saved_num("port2"));
	struct sockaddr_in got;
	socklen_t gl = sizeof(got);
	char addr[INET_ADDRSTRLEN] = "?";
	if (getsockname(v4, (struct sockaddr *)&got, &gl) == 0)
		inet_ntop(AF_INET, &got.sin_addr, addr, sizeof(addr));
	if (strcmp(addr, "192.0.2.1") != 0 || ntohs(got.sin_port) != wl_saved_num("port3"))
		wl_fail("V4 bound to %s:%d, was 192.0.2.1:%llu", addr, ntohs(got.sin_port), wl_saved_num("port3"));

	/* A connection to the shared port reaches one of the two listeners. */
	int c = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (c < 0 || connect(c, (struct sockaddr *)&to, sizeof(to)) < 0) {
		wl_fail("connect to the shared port %d: %s", port, strerror(errno));
	} else {
		struct pollfd pf[2] = { { .fd = t1, .events = POLLIN }, { .fd = t2, .events = POLLIN } };
		if (poll(pf, 2, 5000) <= 0)
			wl_fail("neither listener on port %d has the connection", port);
	}
	return wl_finish();
}
