/*
 * veth: network namespaces joined by a veth pair, as a container nested
 * in a container (or a service's PrivateNetwork=) is joined to its
 * parent's.
 *
 *   veth DIR own    the root unshares a network namespace of its own and
 *                   forks C, which unshares a nested one; a veth pair
 *                   joins them: vethroot0 (root: 10.77.0.1/24,
 *                   02:00:00:77:00:01) and vethkid0 (C: 10.77.0.2/24,
 *                   02:00:00:77:00:02), MTU 1400 both, up. C has
 *                   10.78.0.5/32 on lo, a default route via 10.77.0.1 and
 *                   a TCP listener on port 4243; the root reaches
 *                   10.78.0.5 through a route "10.78.0.0/24 via 10.77.0.2"
 *                   and holds a connection to it.
 *   veth DIR host   the root stays in the host's network namespace; C
 *                   unshares one and the pair's other end, vethPIDh, is
 *                   in the host's: a dump must refuse it by name.
 *   veth DIR ct     as own, but the root is a container's init, in the
 *                   container's network namespace; the test sets up the
 *                   pair from outside (the container has no ip(8) that
 *                   makes one) and then writes DIR/veth-made.
 *
 * The devices are set up with ip(8). After DIR/check each side checks
 * its device (name, ifindex as before, MTU, MAC, up), its addresses and
 * routes (/proc/net/route), exchanges a message over the connection
 * made before the dump, and the root opens a new one through the pair.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define PORT 4243

static const char *mode;
static int ifindex_before; /* this task's veth end's ifindex at setup */
static int listener = -1, conn_s = -1, conn_c = -1;

static void must(int ok, const char *what)
{
	if (!ok)
		wl_die(what);
}

static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int st = system(cmd);
	if (st != 0) {
		errno = EINVAL;
		wl_die(cmd);
	}
}

static void timeouts(int fd)
{
	struct timeval tv = { 10, 0 };
	must(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	must(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) == 0, "SO_SNDTIMEO");
}

static void check_ns(const char *who, int other, const char *what)
{
	char a[128] = "", b[128] = "", p[64];
	snprintf(p, sizeof(p), "/proc/%d/ns/net", getpid());
	if (readlink(p, a, sizeof(a) - 1) < 0)
		wl_fail("%s: readlink %s: %s", who, p, strerror(errno));
	snprintf(p, sizeof(p), "/proc/%d/ns/net", other);
	if (readlink(p, b, sizeof(b) - 1) < 0)
		wl_fail("%s: readlink %s: %s", who, p, strerror(errno));
	if (strcmp(a, b) == 0)
		wl_fail("%s: in the network namespace of %s (%s)", who, what, a);
}

/* check_dev checks the device's index, MTU, MAC address and up state. */
static void check_dev(const char *who, const char *name, const char *mac)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	must(s >= 0, "socket");
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, name);
	if (ioctl(s, SIOCGIFINDEX, &ifr) != 0) {
		wl_fail("%s: no device %s: %s", who, name, strerror(errno));
		close(s);
		return;
	}
	if (ifr.ifr_ifindex != ifindex_before)
		wl_fail("%s: %s has ifindex %d, had %d", who, name, ifr.ifr_ifindex, ifindex_before);
	if (ioctl(s, SIOCGIFMTU, &ifr) != 0 || ifr.ifr_mtu != 1400)
		wl_fail("%s: %s has MTU %d, want 1400", who, name, ifr.ifr_mtu);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0 || !(ifr.ifr_flags & IFF_UP))
		wl_fail("%s: %s is down (flags %#x)", who, name, ifr.ifr_flags);
	if (ioctl(s, SIOCGIFHWADDR, &ifr) != 0) {
		wl_fail("%s: SIOCGIFHWADDR %s: %s", who, name, strerror(errno));
	} else {
		unsigned char *m = (unsigned char *)ifr.ifr_hwaddr.sa_data;
		char got[32];
		snprintf(got, sizeof(got), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4], m[5]);
		if (strcmp(got, mac) != 0)
			wl_fail("%s: %s has MAC %s, want %s", who, name, got, mac);
	}
	close(s);
}

/* check_addr checks that device dev has IPv4 address addr/plen. */
static void check_addr(const char *who, const char *dev, const char *addr, int plen)
{
	struct ifaddrs *ifa, *i;
	if (getifaddrs(&ifa) != 0) {
		wl_fail("%s: getifaddrs: %s", who, strerror(errno));
		return;
	}
	int found = 0;
	for (i = ifa; i; i = i->ifa_next) {
		if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || strcmp(i->ifa_name, dev) != 0)
			continue;
		char a[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, a, sizeof(a));
		uint32_t mask = ntohl(((struct sockaddr_in *)i->ifa_netmask)->sin_addr.s_addr);
		if (strcmp(a, addr) == 0 && __builtin_popcount(mask) == plen)
			found = 1;
	}
	freeifaddrs(ifa);
	if (!found)
		wl_fail("%s: no address %s/%d on %s", who, addr, plen, dev);
}

/* check_route checks /proc/net/route for dst/plen via gw on dev. */
static void check_route(const char *who, const char *dev, const char *dst, int plen, const char *gw)
{
	char buf[8192];
	int fd = open("/proc/net/route", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n < 0) {
		wl_fail("%s: /proc/net/route: %s", who, strerror(errno));
		return;
	}
	buf[n] = 0;
	struct in_addr d, g;
	inet_pton(AF_INET, dst, &d);
	inet_pton(AF_INET, gw, &g);
	uint32_t mask = plen ? htonl(~0u << (32 - plen)) : 0;
	char want[128];
	/* Iface Destination Gateway Flags RefCnt Use Metric Mask: hex in host order of the bytes. */
	snprintf(want, sizeof(want), "%s\t%08X\t%08X\t", dev, d.s_addr, g.s_addr);
	for (char *l = strchr(buf, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
		if (strncmp(l + 1, want, strlen(want)) != 0)
			continue;
		unsigned f, ref, use, metric, m;
		if (sscanf(l + 1 + strlen(want), "%x %u %u %u %X", &f, &ref, &use, &metric, &m) == 5 && m == mask)
			return;
	}
	wl_fail("%s: no route to %s/%d via %s dev %s in /proc/net/route:\n%s", who, dst, plen, gw, dev, buf);
}

static int ifindex_of(const char *name)
{
	int i = if_nametoindex(name);
	must(i > 0, name);
	return i;
}

/* exchange writes out on fd and reads back want. */
static void exchange(const char *who, int fd, const char *out, const char *want, const char *what)
{
	char buf[16] = "";
	if (out && write(fd, out, strlen(out)) != (ssize_t)strlen(out)) {
		wl_fail("%s: %s: write: %s", who, what, strerror(errno));
		return;
	}
	if (!want)
		return;
	ssize_t n = read(fd, buf, strlen(want));
	if (n != (ssize_t)strlen(want) || memcmp(buf, want, n) != 0)
		wl_fail("%s: %s: read %zd bytes \"%.*s\" (%s), want \"%s\"", who, what, n, (int)(n > 0 ? n : 0), buf,
			n < 0 ? strerror(errno) : "", want);
}

static void lo_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	must(s >= 0, "socket");
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, "lo");
	must(ioctl(s, SIOCGIFFLAGS, &ifr) == 0, "SIOCGIFFLAGS lo");
	ifr.ifr_flags |= IFF_UP;
	must(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "SIOCSIFFLAGS lo");
	close(s);
}

static void child(void)
{
	/* Gone with its parent if a test ends early; kept across restore. */
	must(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "PR_SET_PDEATHSIG");
	must(unshare(CLONE_NEWNET) == 0, "unshare(CLONE_NEWNET)");
	lo_up();
	wl_write_file("ready-ns", "1", 1);
	wl_wait_file("veth-made");
	if (strcmp(mode, "host") == 0) {
		wl_write_file("ready-c", "1", 1);
		for (;;)
			pause();
	}
	if (strcmp(mode, "ct") != 0)
		sh("ip link set vethkid0 up && ip addr add 10.77.0.2/24 dev vethkid0 && ip addr add 10.78.0.5/32 dev lo && "
		   "ip route add default via 10.77.0.1 dev vethkid0");
	ifindex_before = ifindex_of("vethkid0");
	listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(listener >= 0, "socket");
	int one = 1;
	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT) };
	must(bind(listener, (struct sockaddr *)&a, sizeof(a)) == 0, "bind");
	must(listen(listener, 4) == 0, "listen");
	timeouts(listener);
	wl_write_file("ready-c", "1", 1);
	conn_s = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	must(conn_s >= 0, "accept");
	timeouts(conn_s);
	exchange("C", conn_s, NULL, "hello", "the connection before the dump");
	wl_write_file("ready-conn", "1", 1);

	while (!wl_check_requested())
		wl_sleep_ms(20);
	check_ns("C", getppid(), "its parent");
	check_dev("C", "vethkid0", "02:00:00:77:00:02");
	check_addr("C", "vethkid0", "10.77.0.2", 24);
	check_addr("C", "lo", "10.78.0.5", 32);
	check_route("C", "vethkid0", "0.0.0.0", 0, "10.77.0.1");
	exchange("C", conn_s, NULL, "ping", "the connection made before the dump");
	exchange("C", conn_s, "pong", NULL, "the connection made before the dump");
	int c = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0) {
		wl_fail("C: no new connection through the pair: accept: %s", strerror(errno));
	} else {
		timeouts(c);
		exchange("C", c, NULL, "new", "a new connection");
		exchange("C", c, "ok", NULL, "a new connection");
		close(c);
	}
	const char *out = wl_failures[0] ? wl_failures : "PASS";
	wl_write_file("res-c", out, strlen(out));
	char buf[4];
	for (int i = 0; i < 1000 && wl_read_file("compared", buf, sizeof(buf)) < 0; i++)
		wl_sleep_ms(20);
	exit(wl_failures[0] ? 1 : 0);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3 || (strcmp(argv[2], "own") != 0 && strcmp(argv[2], "host") != 0 && strcmp(argv[2], "ct") != 0)) {
		fprintf(stderr, "usage: %s DIR own|host|ct\n", argv[0]);
		return 2;
	}
	mode = argv[2];
	char rootdev[IFNAMSIZ] = "vethroot0";
	if (strcmp(mode, "own") == 0) {
		must(unshare(CLONE_NEWNET) == 0, "unshare(CLONE_NEWNET)");
		lo_up();
	} else if (strcmp(mode, "ct") == 0) {
		lo_up();
	} else {
		snprintf(rootdev, sizeof(rootdev), "veth%dh", getpid());
	}
	pid_t c = fork();
	must(c >= 0, "fork");
	if (c == 0)
		child();
	wl_wait_file("ready-ns");
	if (strcmp(mode, "host") == 0) {
		sh("ip link add %s type veth peer name vethkid0 netns /proc/%d/ns/net", rootdev, c);
		wl_write_file("veth-made", "1", 1);
		wl_wait_file("ready-c");
		wl_ready("c %d\nhostdev %s\n", c, rootdev);
		for (;;)
			pause();
	}
	if (strcmp(mode, "ct") == 0) {
		wl_write_file("ready-pids", "1", 1);
		wl_wait_file("veth-made");
	} else {
		sh("ip link add vethroot0 mtu 1400 address 02:00:00:77:00:01 type veth peer name vethkid0 mtu 1400 "
		   "address 02:00:00:77:00:02 netns /proc/%d/ns/net && ip link set vethroot0 up && "
		   "ip addr add 10.77.0.1/24 dev vethroot0 && ip route add 10.78.0.0/24 via 10.77.0.2 dev vethroot0",
		   c);
		wl_write_file("veth-made", "1", 1);
	}
	ifindex_before = ifindex_of("vethroot0");
	wl_wait_file("ready-c");
	conn_c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(conn_c >= 0, "socket");
	timeouts(conn_c);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT) };
	inet_pton(AF_INET, "10.78.0.5", &a.sin_addr);
	must(connect(conn_c, (struct sockaddr *)&a, sizeof(a)) == 0, "connect to 10.78.0.5 through the pair");
	exchange("root", conn_c, "hello", NULL, "the connection before the dump");
	wl_wait_file("ready-conn");
	wl_ready("c %d\n", c);
	while (!wl_check_requested())
		wl_sleep_ms(20);

	if (strcmp(mode, "ct") != 0) /* a container's init has no parent in its PID namespace */
		check_ns("root", getppid(), "its parent");
	check_dev("root", "vethroot0", "02:00:00:77:00:01");
	check_addr("root", "vethroot0", "10.77.0.1", 24);
	check_route("root", "vethroot0", "10.78.0.0", 24, "10.77.0.2");
	exchange("root", conn_c, "ping", "pong", "the connection made before the dump");
	int n = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(n >= 0, "socket");
	timeouts(n);
	if (connect(n, (struct sockaddr *)&a, sizeof(a)) != 0) {
		wl_fail("root: a new connection to 10.78.0.5 through the pair: %s", strerror(errno));
	} else {
		exchange("root", n, "new", "ok", "a new connection");
	}
	close(n);
	char res[4096];
	wl_wait_file("res-c");
	if (wl_read_file("res-c", res, sizeof(res)) < 0 || strcmp(res, "PASS") != 0)
		wl_fail("%s", res);
	wl_write_file("compared", "1", 1);
	int st;
	while (wait(&st) > 0 || errno == EINTR)
		;
	return wl_finish();
}
