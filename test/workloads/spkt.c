/*
 * spkt: a SOCK_PACKET socket (the old packet interface) for a local
 * experimental ethertype (0x88b5), bound to lo by name.
 *
 * After restore it is still bound to lo (getsockname names it), and a
 * frame it sends on lo with sendto comes back to it with its payload.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <poll.h>
#include <sys/socket.h>

#define PROTO 0x88b5

static int s;

static int round_trip(const char *text)
{
	unsigned char frame[128] = { 0 };
	struct ethhdr *eth = (struct ethhdr *)frame;
	eth->h_proto = htons(PROTO);
	size_t n = strlen(text) + 1;
	memcpy(frame + sizeof(*eth), text, n);
	struct sockaddr_pkt to = { .spkt_family = AF_PACKET, .spkt_protocol = htons(PROTO) };
	strcpy((char *)to.spkt_device, "lo");
	if (sendto(s, frame, sizeof(*eth) + n, 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
		wl_fail("sendto lo: %s", strerror(errno));
		return -1;
	}
	double end = wl_now() + 5;
	while (wl_now() < end) {
		struct pollfd p = { .fd = s, .events = POLLIN };
		if (poll(&p, 1, 100) != 1)
			continue;
		unsigned char buf[2048];
		ssize_t got = recv(s, buf, sizeof(buf), 0);
		if (got > (ssize_t)sizeof(*eth) && strncmp((char *)buf + sizeof(*eth), text, got - sizeof(*eth)) == 0)
			return 0;
	}
	wl_fail("the frame \"%s\" sent on lo never came back", text);
	return -1;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	s = socket(AF_PACKET, SOCK_PACKET, htons(PROTO));
	struct sockaddr_pkt a = { .spkt_family = AF_PACKET };
	strcpy((char *)a.spkt_device, "lo");
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(struct sockaddr)) < 0)
		wl_die("SOCK_PACKET socket bound to lo");
	if (round_trip("ctcr-spkt-before") < 0)
		wl_die("a frame before the dump");

	wl_ready("spkt 1\n");
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct sockaddr_pkt got = { 0 };
	socklen_t l = sizeof(got);
	if (getsockname(s, (struct sockaddr *)&got, &l) < 0 || got.spkt_family != AF_PACKET || strcmp((char *)got.spkt_device, "lo") != 0)
		wl_fail("bound to \"%.14s\" (family %d), was lo", got.spkt_device, got.spkt_family);
	int type = 0;
	socklen_t tl = sizeof(type);
	if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_PACKET)
		wl_fail("the socket's type is %d, was SOCK_PACKET", type);
	round_trip("ctcr-spkt-after");
	return wl_finish();
}
