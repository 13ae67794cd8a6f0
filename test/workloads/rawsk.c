/*
 * rawsk: raw IP sockets.
 *
 *   RI  SOCK_RAW IPPROTO_ICMP, ICMP_FILTER passing only echo replies
 *   RW  SOCK_RAW IPPROTO_RAW (IP_HDRINCL on by itself)
 *   RC  SOCK_RAW protocol 253 (experimental), bound to 127.0.0.1,
 *       connected to 127.0.0.1, IP_NODEFRAG on, IP_HDRINCL off
 *   R6  SOCK_RAW over IPv6, IPPROTO_ICMPV6, an ICMPV6_FILTER blocking
 *       every type but echo reply (129)
 *
 * After restore every socket has its type, protocol, addresses and
 * options, and RI sends an echo request to 127.0.0.1 and receives the
 * reply.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <linux/icmp.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#ifndef IP_NODEFRAG
#define IP_NODEFRAG 22
#endif

static int opt(int fd, int level, int name)
{
	int v = -1;
	socklen_t len = sizeof(v);
	if (getsockopt(fd, level, name, &v, &len) < 0)
		return -1000 - errno;
	return v;
}

static unsigned short csum(const void *p, int n)
{
	const unsigned short *w = p;
	unsigned long s = 0;
	for (; n > 1; n -= 2)
		s += *w++;
	if (n)
		s += *(const unsigned char *)w;
	s = (s >> 16) + (s & 0xffff);
	s += s >> 16;
	return ~s;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int ri = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP), rw = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	int rc = socket(AF_INET, SOCK_RAW, 253), r6 = socket(AF_INET6, SOCK_RAW, IPPROTO_ICMPV6);
	if (ri < 0 || rw < 0 || rc < 0 || r6 < 0)
		wl_die("raw socket");
	struct icmp_filter f = { .data = ~(1U << ICMP_ECHOREPLY) };
	if (setsockopt(ri, SOL_RAW, ICMP_FILTER, &f, sizeof(f)) < 0)
		wl_die("ICMP_FILTER");
	struct sockaddr_in lo = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, zero = 0;
	if (bind(rc, (struct sockaddr *)&lo, sizeof(lo)) < 0 || connect(rc, (struct sockaddr *)&lo, sizeof(lo)) < 0 || send(rc, "x", 1, 0) != 1 ||
	    setsockopt(rc, IPPROTO_IP, IP_NODEFRAG, &one, sizeof(one)) < 0 || setsockopt(rc, IPPROTO_IP, IP_HDRINCL, &zero, sizeof(zero)) < 0)
		wl_die("RC");
	struct icmp6_filter f6;
	ICMP6_FILTER_SETBLOCKALL(&f6);
	ICMP6_FILTER_SETPASS(ICMP6_ECHO_REPLY, &f6);
	if (setsockopt(r6, IPPROTO_ICMPV6, ICMP6_FILTER, &f6, sizeof(f6)) < 0)
		wl_die("ICMP6_FILTER");

	wl_ready("ready\n");
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct {
		const char *name;
		int fd, type, proto;
	} s[] = { { "RI", ri, SOCK_RAW, IPPROTO_ICMP }, { "RW", rw, SOCK_RAW, IPPROTO_RAW }, { "RC", rc, SOCK_RAW, 253 }, { "R6", r6, SOCK_RAW, IPPROTO_ICMPV6 } };
	for (int i = 0; i < 4; i++) {
		if (opt(s[i].fd, SOL_SOCKET, SO_TYPE) != s[i].type || opt(s[i].fd, SOL_SOCKET, SO_PROTOCOL) != s[i].proto)
			wl_fail("%s has type %d protocol %d, was %d %d", s[i].name, opt(s[i].fd, SOL_SOCKET, SO_TYPE),
				opt(s[i].fd, SOL_SOCKET, SO_PROTOCOL), s[i].type, s[i].proto);
	}
	struct icmp_filter gf = { 0 };
	socklen_t gl = sizeof(gf);
	if (getsockopt(ri, SOL_RAW, ICMP_FILTER, &gf, &gl) < 0 || gf.data != f.data)
		wl_fail("RI ICMP_FILTER is %#x, was %#x", gf.data, f.data);
	if (opt(rw, IPPROTO_IP, IP_HDRINCL) != 1)
		wl_fail("RW IP_HDRINCL is %d, was 1", opt(rw, IPPROTO_IP, IP_HDRINCL));
	if (opt(rc, IPPROTO_IP, IP_HDRINCL) != 0 || opt(rc, IPPROTO_IP, IP_NODEFRAG) != 1)
		wl_fail("RC IP_HDRINCL %d IP_NODEFRAG %d, were 0 1", opt(rc, IPPROTO_IP, IP_HDRINCL), opt(rc, IPPROTO_IP, IP_NODEFRAG));
	/* getpeername answers ENOTCONN for a raw socket (no peer port):
	 * send(2) without an address works only if it is connected. */
	if (send(rc, "x", 1, 0) != 1)
		wl_fail("RC send(2) without an address, as a connected socket: %s", strerror(errno));
	struct icmp6_filter g6;
	gl = sizeof(g6);
	if (getsockopt(r6, IPPROTO_ICMPV6, ICMP6_FILTER, &g6, &gl) < 0 || memcmp(&g6, &f6, sizeof(f6)) != 0)
		wl_fail("R6 ICMP6_FILTER differs");

	/* An echo request from RI; the filter lets only the reply in. */
	struct icmphdr req = { .type = ICMP_ECHO, .un.echo.id = htons(getpid() & 0xffff), .un.echo.sequence = htons(7) };
	req.checksum = csum(&req, sizeof(req));
	if (sendto(ri, &req, sizeof(req), 0, (struct sockaddr *)&lo, sizeof(lo)) != sizeof(req)) {
		wl_fail("RI sendto: %s", strerror(errno));
	} else {
		int got = 0;
		for (double end = wl_now() + 5; !got && wl_now() < end;) {
			struct pollfd p = { .fd = ri, .events = POLLIN };
			if (poll(&p, 1, 500) <= 0)
				continue;
			char buf[256];
			ssize_t n = recv(ri, buf, sizeof(buf), MSG_DONTWAIT);
			if (n < 20 + (ssize_t)sizeof(struct icmphdr))
				continue;
			struct icmphdr *h = (struct icmphdr *)(buf + (buf[0] & 0xf) * 4);
			if (h->type == ICMP_ECHOREPLY && h->un.echo.id == req.un.echo.id && h->un.echo.sequence == req.un.echo.sequence)
				got = 1;
		}
		if (!got)
			wl_fail("RI got no echo reply from 127.0.0.1 within 5 s");
	}
	return wl_finish();
}
