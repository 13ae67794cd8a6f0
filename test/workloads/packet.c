/*
 * packet: an AF_PACKET socket for IPv4 frames (SOCK_DGRAM), bound to lo,
 * with PACKET_AUXDATA on and an all-multicast membership on lo.
 *
 * After restore it is bound to lo for IPv4 with auxdata on, lo is in
 * all-multicast mode again (the membership), and a datagram sent to
 * 127.0.0.1 shows up on it.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

static long lo_flags(void)
{
	char buf[32] = { 0 };
	int fd = open("/sys/class/net/lo/flags", O_RDONLY);
	if (fd < 0 || read(fd, buf, sizeof(buf) - 1) <= 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	return strtol(buf, NULL, 16);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int lo = if_nametoindex("lo");
	int s = socket(AF_PACKET, SOCK_DGRAM, htons(ETH_P_IP));
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_IP), .sll_ifindex = lo };
	int one = 1;
	struct packet_mreq mr = { .mr_ifindex = lo, .mr_type = PACKET_MR_ALLMULTI };
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || setsockopt(s, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) < 0 ||
	    setsockopt(s, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
		wl_die("packet socket");

	wl_ready("allmulti %ld\n", lo_flags() & IFF_ALLMULTI);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct sockaddr_ll got;
	socklen_t l = sizeof(got);
	if (getsockname(s, (struct sockaddr *)&got, &l) < 0 || got.sll_ifindex != lo || got.sll_protocol != htons(ETH_P_IP))
		wl_fail("bound to interface %d protocol %#x, was %d %#x", got.sll_ifindex, ntohs(got.sll_protocol), lo, ETH_P_IP);
	int v = 0;
	socklen_t vl = sizeof(v);
	if (getsockopt(s, SOL_PACKET, PACKET_AUXDATA, &v, &vl) < 0 || v != 1)
		wl_fail("PACKET_AUXDATA is %d, was 1", v);
	if ((lo_flags() & IFF_ALLMULTI) != (long)wl_saved_num("allmulti"))
		wl_fail("lo's all-multicast flag is %ld, was %llu (the socket's membership)", lo_flags() & IFF_ALLMULTI, wl_saved_num("allmulti"));
	/* Drain what arrived meanwhile, then send one datagram and see it. */
	char buf[2048];
	while (recv(s, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
	int u = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons(9), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (u < 0 || sendto(u, "ping", 4, 0, (struct sockaddr *)&to, sizeof(to)) != 4)
		wl_fail("send a datagram on lo: %s", strerror(errno));
	struct pollfd p = { .fd = s, .events = POLLIN };
	if (poll(&p, 1, 2000) != 1 || recv(s, buf, sizeof(buf), 0) <= 0)
		wl_fail("the packet socket saw no frame of the datagram sent on lo");
	return wl_finish();
}
