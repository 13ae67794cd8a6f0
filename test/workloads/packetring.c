/*
 * packetring: two AF_PACKET sockets on lo with mapped rings, for a local
 * experimental ethertype (0x88b5) no other traffic uses: one receives
 * into a TPACKET_V3 RX ring, the other sends from a TPACKET_V2 TX ring,
 * each ring mapped once.  Like a real user of rings it writes TX frames
 * and reads RX blocks in order, where it stopped last.  Before the dump
 * it sends TX_FRAMES frames, each received in its own RX block: both
 * rings went round and are back at their first frame and block, as a
 * restored ring starts (the kernel's position in a ring cannot be set,
 * neither here nor in CRIU).
 *
 * After restore both rings are mapped at the same addresses (and the
 * sockets have the same versions), and a frame written into the next TX
 * frame (TP_STATUS_SEND_REQUEST, then send()) shows up in the next block
 * of the RX ring with its payload.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define PROTO 0x88b5
#define RX_BLOCK (1 << 16)
#define RX_BLOCKS 4
#define TX_FRAME 2048
#define TX_FRAMES 16

static int lo;
static int rx, tx;
static char *rxring, *txring;
static int txnext, rxnext;

static void bind_lo(int s)
{
	struct sockaddr_ll a = { .sll_family = AF_PACKET, .sll_protocol = htons(PROTO), .sll_ifindex = lo };
	if (bind(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die("bind to lo");
}

/* send_frame writes a frame carrying text into the next TX frame. */
static int send_frame(const char *text)
{
	struct tpacket2_hdr *h = (struct tpacket2_hdr *)(txring + txnext * TX_FRAME);
	if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE) {
		wl_fail("TX frame %d is not free (status %#x)", txnext, h->tp_status);
		return -1;
	}
	unsigned char *f = (unsigned char *)h + TPACKET2_HDRLEN - sizeof(struct sockaddr_ll);
	struct ethhdr *eth = (struct ethhdr *)f;
	memset(eth, 0, sizeof(*eth));
	eth->h_proto = htons(PROTO);
	size_t n = strlen(text) + 1;
	memcpy(f + sizeof(*eth), text, n);
	h->tp_len = sizeof(*eth) + n;
	__atomic_store_n(&h->tp_status, TP_STATUS_SEND_REQUEST, __ATOMIC_RELEASE);
	if (send(tx, NULL, 0, 0) < 0) {
		wl_fail("send from TX frame %d: %s", txnext, strerror(errno));
		return -1;
	}
	if (__atomic_load_n(&h->tp_status, __ATOMIC_ACQUIRE) != TP_STATUS_AVAILABLE) {
		wl_fail("TX frame %d was not sent (status %#x)", txnext, h->tp_status);
		return -1;
	}
	txnext = (txnext + 1) % TX_FRAMES;
	return 0;
}

/* find_frame waits up to 5 s for the next RX block, looks for a frame
 * carrying text in it, and gives the block back to the kernel. */
static int find_frame(const char *text)
{
	struct tpacket_block_desc *bd = (struct tpacket_block_desc *)(rxring + rxnext * RX_BLOCK);
	double end = wl_now() + 5;
	while (!(__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER)) {
		if (wl_now() > end) {
			wl_fail("RX block %d never filled", rxnext);
			return -1;
		}
		struct pollfd p = { .fd = rx, .events = POLLIN };
		poll(&p, 1, 100);
	}
	int found = 0;
	struct tpacket3_hdr *h = (struct tpacket3_hdr *)((char *)bd + bd->hdr.bh1.offset_to_first_pkt);
	for (unsigned i = 0; i < bd->hdr.bh1.num_pkts; i++) {
		const char *payload = (const char *)h + h->tp_mac + sizeof(struct ethhdr);
		if (h->tp_snaplen > sizeof(struct ethhdr) && strncmp(payload, text, h->tp_snaplen - sizeof(struct ethhdr)) == 0)
			found = 1;
		h = (struct tpacket3_hdr *)((char *)h + h->tp_next_offset);
	}
	__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
	rxnext = (rxnext + 1) % RX_BLOCKS;
	if (!found)
		wl_fail("RX block had no frame \"%s\"", text);
	return found ? 0 : -1;
}

/* mapped returns whether /proc/self/maps has a shared mapping of socket s
 * from addr of len bytes. */
static int mapped(int s, void *addr, size_t len)
{
	char want[128], link[64], path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", s);
	ssize_t n = readlink(path, link, sizeof(link) - 1);
	if (n <= 0)
		return 0;
	link[n] = 0;
	snprintf(want, sizeof(want), "%lx-%lx rw-s", (unsigned long)addr, (unsigned long)addr + len);
	FILE *f = fopen("/proc/self/maps", "r");
	char line[512];
	int ok = 0;
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, want, strlen(want)) == 0 && strstr(line, link))
			ok = 1;
	if (f)
		fclose(f);
	return ok;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	lo = if_nametoindex("lo");
	rx = socket(AF_PACKET, SOCK_RAW, htons(PROTO));
	tx = socket(AF_PACKET, SOCK_RAW, htons(PROTO));
	if (rx < 0 || tx < 0)
		wl_die("socket(AF_PACKET)");
	int v3 = TPACKET_V3, v2 = TPACKET_V2;
	struct tpacket_req3 rr = { .tp_block_size = RX_BLOCK, .tp_block_nr = RX_BLOCKS, .tp_frame_size = 2048,
				   .tp_frame_nr = RX_BLOCK / 2048 * RX_BLOCKS, .tp_retire_blk_tov = 20 };
	struct tpacket_req tr = { .tp_block_size = TX_FRAME * TX_FRAMES, .tp_block_nr = 1, .tp_frame_size = TX_FRAME, .tp_frame_nr = TX_FRAMES };
	if (setsockopt(rx, SOL_PACKET, PACKET_VERSION, &v3, sizeof(v3)) < 0 || setsockopt(rx, SOL_PACKET, PACKET_RX_RING, &rr, sizeof(rr)) < 0)
		wl_die("RX ring");
	if (setsockopt(tx, SOL_PACKET, PACKET_VERSION, &v2, sizeof(v2)) < 0 || setsockopt(tx, SOL_PACKET, PACKET_TX_RING, &tr, sizeof(tr)) < 0)
		wl_die("TX ring");
	bind_lo(rx);
	bind_lo(tx);
	rxring = mmap(NULL, RX_BLOCK * RX_BLOCKS, PROT_READ | PROT_WRITE, MAP_SHARED, rx, 0);
	txring = mmap(NULL, TX_FRAME * TX_FRAMES, PROT_READ | PROT_WRITE, MAP_SHARED, tx, 0);
	if (rxring == MAP_FAILED || txring == MAP_FAILED)
		wl_die("mmap a ring");
	for (int i = 0; i < TX_FRAMES; i++) {
		char text[32];
		snprintf(text, sizeof(text), "ctcr-ring-before-%d", i);
		if (send_frame(text) < 0 || find_frame(text) < 0)
			wl_die("frames through both rings before the dump");
	}
	if (txnext != 0 || rxnext != 0)
		wl_die("the rings did not go round");

	wl_ready("rx %lu\ntx %lu\n", (unsigned long)rxring, (unsigned long)txring);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	int v = 0;
	socklen_t vl = sizeof(v);
	if (getsockopt(rx, SOL_PACKET, PACKET_VERSION, &v, &vl) < 0 || v != TPACKET_V3)
		wl_fail("the RX socket's version is %d, was TPACKET_V3", v);
	vl = sizeof(v);
	if (getsockopt(tx, SOL_PACKET, PACKET_VERSION, &v, &vl) < 0 || v != TPACKET_V2)
		wl_fail("the TX socket's version is %d, was TPACKET_V2", v);
	if (!mapped(rx, rxring, RX_BLOCK * RX_BLOCKS))
		wl_fail("the RX ring is not a shared mapping of its socket at %p any more", rxring);
	if (!mapped(tx, txring, TX_FRAME * TX_FRAMES))
		wl_fail("the TX ring is not a shared mapping of its socket at %p any more", txring);
	if (send_frame("ctcr-ring-after") == 0)
		find_frame("ctcr-ring-after");
	return wl_finish();
}
