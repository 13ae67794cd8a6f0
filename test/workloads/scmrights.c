/*
 * scmrights: fds in flight. Messages queued on unix sockets carry fds
 * (SCM_RIGHTS) that nobody has received yet:
 *
 *   stream pair S:   "first" with the read end of a pipe holding
 *                    "pipe data" (the workload keeps the write end) and
 *                    a file opened at offset 3; then "second" with an
 *                    eventfd counting 5 (the workload keeps it open too)
 *   datagram pair D: "dgram" with a memfd holding "memfd", and with one
 *                    end of a socketpair X holding "inside" (the
 *                    workload keeps X's other end)
 *
 * The workload closes its own copies of what it sent, except those it
 * keeps. After restore it receives every message and checks each fd: the
 * same kind of object with the same state, still one object with what
 * the workload kept (bytes written on its side arrive on the other).
 */
#include "workload.h"

#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

static void send_fds(int sk, const char *msg, const int *fds, int n)
{
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = strlen(msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = CMSG_SPACE(sizeof(int) * n) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * n);
	memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
	if (sendmsg(sk, &mh, 0) != (ssize_t)strlen(msg))
		wl_die("sendmsg");
}

/* recv_fds receives one message of want's length into got and up to 4
 * fds; it returns how many fds came. */
static int recv_fds(int sk, const char *want, int *fds, const char *what)
{
	char got[64] = { 0 };
	char cbuf[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov = { .iov_base = got, .iov_len = strlen(want) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t n = recvmsg(sk, &mh, MSG_DONTWAIT);
	if (n < 0) {
		wl_fail("%s: recvmsg: %s", what, strerror(errno));
		return 0;
	}
	if ((size_t)n != strlen(want) || memcmp(got, want, n) != 0)
		wl_fail("%s: received \"%s\", want \"%s\"", what, got, want);
	int k = 0;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int m = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			memcpy(fds + k, CMSG_DATA(c), sizeof(int) * m);
			k += m;
		}
	return k;
}

static void expect_read(int fd, const char *want, const char *what)
{
	char buf[64] = { 0 };
	ssize_t n = read(fd, buf, strlen(want));
	if (n != (ssize_t)strlen(want) || memcmp(buf, want, n) != 0)
		wl_fail("%s: read %zd bytes \"%s\" (%s), want \"%s\"", what, n, buf, n < 0 ? strerror(errno) : "", want);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);

	int s[2], d[2], x[2], p[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, s) || socketpair(AF_UNIX, SOCK_DGRAM, 0, d) ||
	    socketpair(AF_UNIX, SOCK_STREAM, 0, x) || pipe(p))
		wl_die("sockets and pipe");
	if (write(p[1], "pipe data", 9) != 9)
		wl_die("write the pipe");
	char path[4096];
	wl_path(path, sizeof(path), "file");
	int wf = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (wf < 0 || write(wf, "0123456789", 10) != 10 || close(wf))
		wl_die(path);
	int f = open(path, O_RDONLY);
	if (f < 0 || lseek(f, 3, SEEK_SET) != 3)
		wl_die("open the file at 3");
	int ev = eventfd(5, 0);
	int mfd = memfd_create("scm", 0);
	if (ev < 0 || mfd < 0 || write(mfd, "memfd", 5) != 5)
		wl_die("eventfd and memfd");
	if (write(x[1], "inside", 6) != 6)
		wl_die("write X");

	int first[2] = { p[0], f };
	send_fds(s[0], "first", first, 2);
	send_fds(s[0], "second", &ev, 1);
	int dg[2] = { mfd, x[0] };
	send_fds(d[0], "dgram", dg, 2);
	close(p[0]);
	close(f);
	close(mfd);
	close(x[0]);

	wl_ready("sent 3\n");
	while (!wl_check_requested())
		wl_sleep_ms(10);

	int got[4];
	if (recv_fds(s[1], "first", got, "first") != 2) {
		wl_fail("\"first\" came without its 2 fds");
	} else {
		expect_read(got[0], "pipe data", "the pipe's read end in flight");
		if (write(p[1], "more", 4) != 4)
			wl_fail("write the kept pipe end: %s", strerror(errno));
		expect_read(got[0], "more", "the pipe's read end, from the kept write end");
		expect_read(got[1], "345", "the file in flight at offset 3");
	}
	if (recv_fds(s[1], "second", got, "second") != 1) {
		wl_fail("\"second\" came without its eventfd");
	} else {
		uint64_t v = 0;
		if (read(got[0], &v, 8) != 8 || v != 5)
			wl_fail("the eventfd in flight counts %llu, want 5", (unsigned long long)v);
		v = 7;
		if (write(ev, &v, 8) != 8 || read(got[0], &v, 8) != 8 || v != 7)
			wl_fail("the eventfd in flight is not the one kept: counts %llu, want 7", (unsigned long long)v);
	}
	if (recv_fds(d[1], "dgram", got, "dgram") != 2) {
		wl_fail("\"dgram\" came without its 2 fds");
	} else {
		char buf[8] = { 0 };
		if (pread(got[0], buf, 5, 0) != 5 || memcmp(buf, "memfd", 5) != 0)
			wl_fail("the memfd in flight holds \"%s\", want \"memfd\"", buf);
		expect_read(got[1], "inside", "X's end in flight");
		if (write(x[1], "again", 5) != 5)
			wl_fail("write X's kept end: %s", strerror(errno));
		expect_read(got[1], "again", "X's end in flight, from the kept end");
	}
	return wl_finish();
}
