/*
 * netlink: a NETLINK_ROUTE socket bound with group RTMGRP_LINK and
 * joined to group 33 (beyond bind's 32), its port id chosen by the
 * kernel.
 *
 * After restore it has the same port id and groups, and a RTM_GETLINK
 * dump request is answered.
 */
#include "workload.h"

#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <sys/socket.h>

static unsigned port_of(int fd)
{
	struct sockaddr_nl a;
	socklen_t l = sizeof(a);
	if (getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return 0;
	return a.nl_pid;
}

static unsigned long long groups_of(int fd)
{
	unsigned int w[2] = { 0, 0 };
	socklen_t l = sizeof(w);
	if (getsockopt(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, w, &l) < 0)
		return 0;
	return w[0] | (unsigned long long)w[1] << 32;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct sockaddr_nl a = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK };
	int g = 33;
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0 || setsockopt(s, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)) < 0)
		wl_die("netlink socket");

	wl_ready("port %u\ngroups %llu\n", port_of(s), groups_of(s));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (port_of(s) != (unsigned)wl_saved_num("port"))
		wl_fail("port id %u, was %llu", port_of(s), wl_saved_num("port"));
	if (groups_of(s) != wl_saved_num("groups"))
		wl_fail("groups %#llx, were %#llx", groups_of(s), wl_saved_num("groups"));
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 1 },
		  .i = { .ifi_family = AF_UNSPEC } };
	if (send(s, &req, sizeof(req), 0) != sizeof(req))
		wl_fail("send RTM_GETLINK: %s", strerror(errno));
	char buf[16384];
	ssize_t n = recv(s, buf, sizeof(buf), 0);
	struct nlmsghdr *h = (struct nlmsghdr *)buf;
	if (n <= 0 || !NLMSG_OK(h, (size_t)n) || (h->nlmsg_type != RTM_NEWLINK && h->nlmsg_type != NLMSG_DONE))
		wl_fail("RTM_GETLINK: %zd bytes, type %d (%s)", n, n > 0 ? h->nlmsg_type : -1, n < 0 ? strerror(errno) : "");
	return wl_finish();
}
