/*
 * epolltfd: epoll targets whose fd number no longer holds them. The
 * kernel keys an epoll item by (file, fd number at EPOLL_CTL_ADD); the
 * item lives as long as the file, whatever happens to the number.
 *
 *   ep1 watches pipe a under number A; a was dup'ed to A2 and A closed.
 *   ep1 watches eventfd b under number B; b was dup'ed to B2, B closed,
 *   and a new eventfd c opened at B and added too: two items keyed B.
 *   ep2 watches pipe d under number D, d was moved to D2; ep2 itself is
 *   in flight in an SCM_RIGHTS message of a socketpair, closed here.
 *
 * After restore each epoll reports each target with its data when it is
 * ready, and the items are still keyed by the old numbers: putting the
 * file back at its number lets EPOLL_CTL_MOD find it.
 */
#include "workload.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

static int add(int ep, int fd, unsigned long long data)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = data };
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* ready returns the data of every ready item of ep, ORed. */
static unsigned long long ready(int ep)
{
	struct epoll_event evs[8];
	int n = epoll_wait(ep, evs, 8, 1000);
	unsigned long long got = 0;
	for (int i = 0; i < n; i++)
		got |= evs[i].data.u64;
	return got;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int a[2], d[2], sp[2];
	if (pipe(a) < 0 || pipe(d) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sp) < 0)
		wl_die("pipe/socketpair");
	int ep1 = epoll_create1(0), ep2 = epoll_create1(0);
	int b = eventfd(0, 0);
	if (ep1 < 0 || ep2 < 0 || b < 0)
		wl_die("epoll_create/eventfd");

	int A = a[0];
	if (add(ep1, A, 0x1) < 0)
		wl_die("add a");
	int A2 = dup(A);
	close(A);
	int B = b;
	if (add(ep1, B, 0x10) < 0)
		wl_die("add b");
	int B2 = dup(B);
	close(B);
	int c = eventfd(0, 0);
	if (c != B) {
		errno = EINVAL;
		wl_die("the new eventfd did not take the closed number");
	}
	if (add(ep1, c, 0x100) < 0)
		wl_die("add c");
	int D = d[0];
	if (add(ep2, D, 0x1000) < 0)
		wl_die("add d");
	int D2 = dup(D);
	close(D);

	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	char byte = 'e';
	struct iovec iov = { &byte, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &ep2, sizeof(int));
	if (sendmsg(sp[0], &mh, 0) != 1)
		wl_die("sendmsg");
	close(ep2);

	wl_ready("A %d\nA2 %d\nB %d\nB2 %d\nD %d\nD2 %d\n", A, A2, B, B2, D, D2);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	unsigned long long got = ready(ep1);
	if (got != 0)
		wl_fail("ep1 reports %#llx before anything was written", got);
	if (write(a[1], "x", 1) != 1)
		wl_fail("write pipe a: %s", strerror(errno));
	if ((got = ready(ep1)) != 0x1)
		wl_fail("ep1 reports %#llx once pipe a is readable, want 0x1", got);
	char x;
	if (read(A2, &x, 1) != 1)
		wl_fail("read pipe a through fd %d: %s", A2, strerror(errno));
	unsigned long long one = 1;
	if (write(B2, &one, 8) != 8)
		wl_fail("write eventfd b through fd %d: %s", B2, strerror(errno));
	if ((got = ready(ep1)) != 0x10)
		wl_fail("ep1 reports %#llx once eventfd b is readable, want 0x10", got);
	if (write(c, &one, 8) != 8)
		wl_fail("write eventfd c: %s", strerror(errno));
	if ((got = ready(ep1)) != 0x110)
		wl_fail("ep1 reports %#llx once eventfds b and c are readable, want 0x110", got);

	/* The item of pipe a is keyed (a, A): put a back at A and modify it. */
	if (dup2(A2, A) != A)
		wl_fail("dup2: %s", strerror(errno));
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x2 };
	if (epoll_ctl(ep1, EPOLL_CTL_MOD, A, &ev) < 0)
		wl_fail("EPOLL_CTL_MOD of pipe a at its old number %d: %s", A, strerror(errno));
	if (epoll_ctl(ep1, EPOLL_CTL_MOD, A2, &ev) == 0 || errno != ENOENT)
		wl_fail("EPOLL_CTL_MOD of pipe a at fd %d, never registered, did not fail with ENOENT", A2);

	char rb;
	char rcbuf[CMSG_SPACE(sizeof(int))];
	struct iovec riov = { &rb, 1 };
	struct msghdr rm = { .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rcbuf, .msg_controllen = sizeof(rcbuf) };
	int ep2r = -1;
	if (recvmsg(sp[1], &rm, MSG_DONTWAIT) != 1 || rb != 'e')
		wl_fail("recvmsg of the epoll in flight: %s", strerror(errno));
	else if ((cm = CMSG_FIRSTHDR(&rm)) == NULL || cm->cmsg_type != SCM_RIGHTS)
		wl_fail("the message in flight lost its epoll fd");
	else
		memcpy(&ep2r, CMSG_DATA(cm), sizeof(int));
	if (ep2r >= 0) {
		if ((got = ready(ep2r)) != 0)
			wl_fail("ep2 reports %#llx before anything was written", got);
		if (write(d[1], "y", 1) != 1)
			wl_fail("write pipe d: %s", strerror(errno));
		if ((got = ready(ep2r)) != 0x1000)
			wl_fail("ep2 (in flight) reports %#llx once pipe d is readable, want 0x1000", got);
	}
	return wl_finish();
}
