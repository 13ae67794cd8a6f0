/*
 * ipc: pipes, a FIFO and unix sockets with data in flight.
 *
 *   ipc DIR
 *
 * Sets up, before DIR/ready:
 *   - pipe A inside the process: 13 bytes buffered, size 128 KiB, read end
 *     O_NONBLOCK and dup'ed;
 *   - pipes B (parent -> child, "hello child" buffered) and C (child ->
 *     parent, "hello parent" buffered) shared with a forked child;
 *   - a FIFO DIR/fifo with "fifo-data" buffered, read end O_NONBLOCK;
 *   - a socketpair of each type (stream, dgram, seqpacket) with two
 *     messages queued one way and one the other, options set on them;
 *   - a stream pair shut down for writing after "last";
 *   - a stream listener on DIR/listen.sock with one accepted connection
 *     (data queued both ways) and one waiting in its backlog;
 *   - a datagram socket bound to DIR/dgram.sock and one to an abstract
 *     name, each with datagrams queued.
 * After restore (DIR/check) it verifies every queue, its boundaries and
 * the flags and options, then that each channel still carries new data.
 */
#include "workload.h"

#include <signal.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#define CHECK(cond, ...)                \
	do {                            \
		if (!(cond))            \
			wl_fail(__VA_ARGS__); \
	} while (0)

static void must(int ok, const char *what)
{
	if (!ok)
		wl_die(what);
}

static void send_all(int fd, const char *s)
{
	must(send(fd, s, strlen(s), MSG_NOSIGNAL) == (ssize_t)strlen(s), s);
}

/* expect_msg receives one message (or len bytes of a stream) and compares. */
static void expect_msg(int fd, const char *want, const char *what)
{
	char buf[256];
	size_t len = strlen(want), off = 0;
	int type = 0;
	socklen_t tl = sizeof(type);
	getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl);
	do {
		ssize_t n = recv(fd, buf + off, sizeof(buf) - 1 - off, MSG_DONTWAIT | (type == SOCK_STREAM ? 0 : MSG_TRUNC));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			wl_fail("%s: recv after %zu bytes: %s", what, off, n == 0 ? "EOF" : strerror(errno));
			return;
		}
		off += n;
		if (type != SOCK_STREAM)
			break;
		if (type == SOCK_STREAM && off >= len)
			break;
		if (type == SOCK_STREAM && off > len)
			break;
	} while (type == SOCK_STREAM && off < len);
	buf[off < sizeof(buf) ? off : sizeof(buf) - 1] = 0;
	if (off != len || memcmp(buf, want, len) != 0)
		wl_fail("%s: got %zu bytes \"%s\", want \"%s\"", what, off, buf, want);
}

static void expect_read(int fd, const char *want, const char *what)
{
	char buf[256];
	size_t len = strlen(want), off = 0;
	while (off < len) {
		ssize_t n = read(fd, buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			wl_fail("%s: read after %zu bytes: %s", what, off, n == 0 ? "EOF" : strerror(errno));
			return;
		}
		off += n;
	}
	buf[off] = 0;
	if (memcmp(buf, want, len) != 0)
		wl_fail("%s: got \"%s\", want \"%s\"", what, buf, want);
}

static void expect_empty(int fd, const char *what)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
	if (n < 0 && errno == ENOTSOCK)
		n = read(fd, &c, 1);
	if (!(n < 0 && errno == EAGAIN))
		wl_fail("%s: more data than the checkpoint had (%zd)", what, n);
}

static int inq(int fd)
{
	int n = -1;
	ioctl(fd, FIONREAD, &n);
	return n;
}

static int child_main(int rd, int wr)
{
	/* Child: C holds "hello parent" for the parent; it waits on B. */
	must(write(wr, "hello parent", 12) == 12, "child write");
	char buf[64];
	size_t off = 0;
	while (off < 13) { /* "hello child" + "go" */
		ssize_t n = read(rd, buf + off, 13 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += n;
	}
	const char *verdict = (off == 13 && memcmp(buf, "hello childgo", 13) == 0) ? "child-ok" : "child-bad";
	must(write(wr, verdict, 9) == 9, "child verdict");
	return 0;
}

static int sockopt(int fd, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);
	getsockopt(fd, SOL_SOCKET, opt, &v, &l);
	return v;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	char path[4096];

	/* Pipe A. */
	int a[2];
	must(pipe(a) == 0, "pipe A");
	must(fcntl(a[1], F_SETPIPE_SZ, 128 << 10) >= 0, "F_SETPIPE_SZ");
	must(write(a[1], "pipe-A-data!\n", 13) == 13, "write A");
	must(fcntl(a[0], F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK A");
	int a_dup = dup(a[0]);
	must(a_dup >= 0, "dup A");

	/* Pipes B and C, with a child. */
	int b[2], c[2];
	must(pipe(b) == 0 && pipe(c) == 0, "pipes B C");
	must(write(b[1], "hello child", 11) == 11, "write B");
	pid_t child = fork();
	must(child >= 0, "fork");
	if (child == 0) {
		close(b[1]);
		close(c[0]);
		_exit(child_main(b[0], c[1]));
	}
	close(b[0]);
	close(c[1]);

	/* FIFO. */
	wl_path(path, sizeof(path), "fifo");
	must(mkfifo(path, 0600) == 0, "mkfifo");
	int fr = open(path, O_RDONLY | O_NONBLOCK);
	int fw = open(path, O_WRONLY);
	must(fr >= 0 && fw >= 0, "open fifo");
	must(write(fw, "fifo-data", 9) == 9, "write fifo");

	/* Socketpairs of each type. */
	int types[3] = { SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET };
	const char *tname[3] = { "stream", "dgram", "seqpacket" };
	int sp[3][2];
	for (int i = 0; i < 3; i++) {
		must(socketpair(AF_UNIX, types[i], 0, sp[i]) == 0, "socketpair");
		send_all(sp[i][0], "a2b-1");
		send_all(sp[i][0], "a2b-2");
		send_all(sp[i][1], "b2a-1");
	}
	int one = 1, sndbuf = 65536;
	struct timeval tv = { 3, 250000 };
	must(setsockopt(sp[0][0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) == 0, "SO_SNDBUF");
	must(setsockopt(sp[0][1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) == 0, "SO_RCVTIMEO");
	must(setsockopt(sp[1][0], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == 0, "SO_PASSCRED");
	must(fcntl(sp[2][1], F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
	int saved_sndbuf = sockopt(sp[0][0], SO_SNDBUF), saved_rcvbuf = sockopt(sp[0][0], SO_RCVBUF);
	struct timeval saved_tv = { 0, 0 };
	socklen_t gl = sizeof(saved_tv);
	getsockopt(sp[0][1], SOL_SOCKET, SO_RCVTIMEO, &saved_tv, &gl); /* rounded to jiffies */

	/* A stream pair shut down for writing. */
	int sh[2];
	must(socketpair(AF_UNIX, SOCK_STREAM, 0, sh) == 0, "socketpair sh");
	send_all(sh[0], "last");
	must(shutdown(sh[0], SHUT_WR) == 0, "shutdown");

	/* Listener with an accepted connection and a pending one. */
	struct sockaddr_un lsa = { .sun_family = AF_UNIX };
	wl_path(lsa.sun_path, sizeof(lsa.sun_path), "listen.sock");
	int ls = socket(AF_UNIX, SOCK_STREAM, 0);
	must(ls >= 0 && bind(ls, (void *)&lsa, sizeof(lsa)) == 0 && listen(ls, 8) == 0, "listen");
	int c0 = socket(AF_UNIX, SOCK_STREAM, 0);
	must(c0 >= 0 && connect(c0, (void *)&lsa, sizeof(lsa)) == 0, "connect c0");
	int a0 = accept(ls, NULL, NULL);
	must(a0 >= 0, "accept");
	send_all(c0, "c0-data");
	send_all(a0, "a0-data");
	int c1 = socket(AF_UNIX, SOCK_STREAM, 0);
	must(c1 >= 0 && connect(c1, (void *)&lsa, sizeof(lsa)) == 0, "connect c1");

	/* Datagram sockets bound to a path and to an abstract name. */
	struct sockaddr_un dsa = { .sun_family = AF_UNIX };
	wl_path(dsa.sun_path, sizeof(dsa.sun_path), "dgram.sock");
	int ds = socket(AF_UNIX, SOCK_DGRAM, 0);
	must(ds >= 0 && bind(ds, (void *)&dsa, sizeof(dsa)) == 0, "bind dgram");
	int dc = socket(AF_UNIX, SOCK_DGRAM, 0);
	must(dc >= 0, "dgram client");
	must(sendto(dc, "d1", 2, 0, (void *)&dsa, sizeof(dsa)) == 2, "sendto d1");
	must(sendto(dc, "d2-longer", 9, 0, (void *)&dsa, sizeof(dsa)) == 9, "sendto d2");

	struct sockaddr_un asa = { .sun_family = AF_UNIX };
	int alen = snprintf(asa.sun_path + 1, sizeof(asa.sun_path) - 1, "ctcr-ipc-%d", getpid()) + 1 + offsetof(struct sockaddr_un, sun_path);
	int as = socket(AF_UNIX, SOCK_DGRAM, 0);
	must(as >= 0 && bind(as, (void *)&asa, alen) == 0, "bind abstract");
	int ac = socket(AF_UNIX, SOCK_DGRAM, 0);
	must(ac >= 0 && connect(ac, (void *)&asa, alen) == 0, "connect abstract");
	send_all(ac, "x1");
	send_all(ac, "x2");

	/* The child's message must be in C before the dump. */
	for (int i = 0; inq(c[0]) < 12 && i < 5000; i++)
		wl_sleep_ms(1);
	must(inq(c[0]) == 12, "child did not write");

	wl_ready("pid %d\nchild %d\nsndbuf %d\nrcvbuf %d\nrcvtimeo_us %lld\n", getpid(), child, saved_sndbuf, saved_rcvbuf,
		 (long long)saved_tv.tv_sec * 1000000 + saved_tv.tv_usec);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	/* Pipe A. */
	CHECK(fcntl(a[0], F_GETPIPE_SZ) == 128 << 10, "pipe A size %d, want %d", fcntl(a[0], F_GETPIPE_SZ), 128 << 10);
	CHECK(fcntl(a[0], F_GETFL) & O_NONBLOCK, "pipe A read end lost O_NONBLOCK");
	CHECK(fcntl(a_dup, F_GETFL) & O_NONBLOCK, "pipe A's dup lost O_NONBLOCK (not the same description)");
	CHECK(!(fcntl(a[1], F_GETFL) & O_NONBLOCK), "pipe A write end gained O_NONBLOCK");
	CHECK(inq(a[0]) == 13, "pipe A holds %d bytes, want 13", inq(a[0]));
	expect_read(a_dup, "pipe-A-data!\n", "pipe A");
	expect_empty(a[0], "pipe A");
	must(write(a[1], "more", 4) == 4, "write A again");
	expect_read(a[0], "more", "pipe A after restore");

	/* Pipes B and C with the child. */
	CHECK(inq(c[0]) == 12, "pipe C holds %d bytes, want 12", inq(c[0]));
	expect_read(c[0], "hello parent", "pipe C");
	must(write(b[1], "go", 2) == 2, "write B");
	expect_read(c[0], "child-ok", "the child's verdict");
	int st = 0;
	CHECK(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d ended with status %#x", child, st);

	/* FIFO. */
	CHECK(fcntl(fr, F_GETFL) & O_NONBLOCK, "FIFO read end lost O_NONBLOCK");
	CHECK(inq(fr) == 9, "FIFO holds %d bytes, want 9", inq(fr));
	expect_read(fr, "fifo-data", "FIFO");
	must(write(fw, "again", 5) == 5, "write FIFO");
	expect_read(fr, "again", "FIFO after restore");

	/* Socketpairs: queues, boundaries, then new traffic. */
	for (int i = 0; i < 3; i++) {
		char what[64];
		snprintf(what, sizeof(what), "%s pair a->b", tname[i]);
		if (types[i] == SOCK_STREAM) {
			expect_msg(sp[i][1], "a2b-1a2b-2", what);
		} else {
			expect_msg(sp[i][1], "a2b-1", what);
			expect_msg(sp[i][1], "a2b-2", what);
		}
		expect_empty(sp[i][1], what);
		snprintf(what, sizeof(what), "%s pair b->a", tname[i]);
		expect_msg(sp[i][0], "b2a-1", what);
		expect_empty(sp[i][0], what);
		send_all(sp[i][0], "new-a");
		send_all(sp[i][1], "new-b");
		snprintf(what, sizeof(what), "%s pair after restore", tname[i]);
		expect_msg(sp[i][1], "new-a", what);
		expect_msg(sp[i][0], "new-b", what);
		int type = sockopt(sp[i][0], SO_TYPE);
		CHECK(type == types[i], "%s pair has type %d", tname[i], type);
	}
	CHECK(sockopt(sp[0][0], SO_SNDBUF) == (int)wl_saved_num("sndbuf"), "SO_SNDBUF %d, want %d", sockopt(sp[0][0], SO_SNDBUF), (int)wl_saved_num("sndbuf"));
	CHECK(sockopt(sp[0][0], SO_RCVBUF) == (int)wl_saved_num("rcvbuf"), "SO_RCVBUF %d, want %d", sockopt(sp[0][0], SO_RCVBUF), (int)wl_saved_num("rcvbuf"));
	struct timeval got = { 0, 0 };
	gl = sizeof(got);
	getsockopt(sp[0][1], SOL_SOCKET, SO_RCVTIMEO, &got, &gl);
	long long got_us = (long long)got.tv_sec * 1000000 + got.tv_usec;
	CHECK(got_us == (long long)wl_saved_num("rcvtimeo_us"), "SO_RCVTIMEO %lld us, want %lld", got_us, (long long)wl_saved_num("rcvtimeo_us"));
	CHECK(sockopt(sp[1][0], SO_PASSCRED) == 1, "SO_PASSCRED lost");
	CHECK(fcntl(sp[2][1], F_GETFL) & O_NONBLOCK, "seqpacket socket lost O_NONBLOCK");
	CHECK(!(fcntl(sp[2][0], F_GETFL) & O_NONBLOCK), "seqpacket socket gained O_NONBLOCK");

	/* Shut down pair: "last", then EOF; the writer cannot write. */
	expect_msg(sh[1], "last", "shut down pair");
	char ch;
	ssize_t n = recv(sh[1], &ch, 1, MSG_DONTWAIT);
	CHECK(n == 0, "shut down pair: recv after the data gave %zd (%s), want EOF", n, n < 0 ? strerror(errno) : "data");
	n = send(sh[0], "x", 1, MSG_NOSIGNAL);
	CHECK(n < 0 && errno == EPIPE, "shut down pair: send gave %zd (%s), want EPIPE", n, n < 0 ? strerror(errno) : "sent");
	send_all(sh[1], "back");
	expect_msg(sh[0], "back", "shut down pair, other way");

	/* Listener. */
	struct sockaddr_un name = { 0 };
	socklen_t nl = sizeof(name);
	getsockname(a0, (void *)&name, &nl);
	CHECK(strcmp(name.sun_path, lsa.sun_path) == 0, "accepted socket is named \"%s\", want \"%s\"", name.sun_path, lsa.sun_path);
	expect_msg(a0, "c0-data", "accepted connection");
	expect_msg(c0, "a0-data", "connecting socket");
	int fl = fcntl(ls, F_GETFL);
	fcntl(ls, F_SETFL, fl | O_NONBLOCK);
	int a1 = accept(ls, NULL, NULL);
	CHECK(a1 >= 0, "no connection waiting on the listener: %s", strerror(errno));
	if (a1 >= 0) {
		send_all(c1, "late");
		send_all(a1, "back");
		expect_msg(a1, "late", "pending connection");
		expect_msg(c1, "back", "pending connection, other way");
		int a2 = accept(ls, NULL, NULL);
		CHECK(a2 < 0 && errno == EAGAIN, "a second connection was waiting");
	}
	int c2 = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(connect(c2, (void *)&lsa, sizeof(lsa)) == 0, "connect to the listener after restore: %s", strerror(errno));

	/* Datagram servers. */
	expect_msg(ds, "d1", "path-bound datagram socket");
	expect_msg(ds, "d2-longer", "path-bound datagram socket");
	expect_empty(ds, "path-bound datagram socket");
	CHECK(sendto(dc, "d3", 2, 0, (void *)&dsa, sizeof(dsa)) == 2, "sendto after restore: %s", strerror(errno));
	expect_msg(ds, "d3", "path-bound datagram socket after restore");
	expect_msg(as, "x1", "abstract datagram socket");
	expect_msg(as, "x2", "abstract datagram socket");
	expect_empty(as, "abstract datagram socket");
	send_all(ac, "x3");
	expect_msg(as, "x3", "abstract datagram socket after restore");
	return wl_finish();
}
