/*
 * peercred: the peer credentials (SO_PEERCRED) of unix sockets, which
 * the kernel records at listen, connect and socketpair, come back as
 * they were.
 *
 * The parent P (root) has
 *   sp[2]    a stream socketpair                  peer: P, its uid, gid
 *   dp[2]    a datagram socketpair                peer: P
 *   dl, dc   a datagram socket bound to an abstract name and one
 *            connected to it                      peer: none (pid 0,
 *                                                 uid and gid -1)
 *   L        a stream listener on DIR/l.sock      peer: P
 *   Q        a seqpacket listener on an abstract name   peer: P
 *   la, qa   connections accepted from L and Q, from the child C
 *                                                 peer: C, 1000, 1000
 *   cp1      an end of the child's own socketpair, passed to P over la
 *                                                 peer: C, 1000, 1000
 * and the child C, whose effective uid and gid are 1000 when it
 * connects (its fsuid stays 0 to reach DIR), all its ids 1000 after:
 *   lc, qc   its accepted connections to L and Q  peer: P (L's and Q's)
 *   lp, qp   its connections still in L's and Q's backlog   peer: P
 *   cp0      the other end of its socketpair      peer: C, 1000, 1000
 *
 * Each records SO_PEERCRED of every socket before the dump (P in
 * DIR/ready). After restore, on DIR/check, P sends "check" on la; C,
 * blocked reading lc, checks its sockets against what it recorded and
 * against the pids it knows (getppid(), getpid()), and answers "PASS"
 * or what differed. P checks its own, then accepts the pending
 * connections, whose peer must be C with uid and gid 1000, and
 * connects a new client to L, whose peer must be P (a listener's
 * credentials are what a later client copies). SO_PEERPIDFD of sp0 and
 * la gives pidfds of P and C.
 *
 *   peercred DIR exited
 *
 * adds a listener XL on an abstract name made by a child X that passed
 * it to P and exited (P reaps it), and a connection XC from P waiting in
 * XL's backlog: both name X, which is gone, and must still name it
 * after restore (the restore has a stand-in with X's PID make the
 * calls, where X's PID is free and the tree is in ctcr's PID
 * namespace), as must a client connecting to XL after restore.
 */
#include "workload.h"

#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <sys/fsuid.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#define CHILD_ID 1000

static socklen_t addr_of(struct sockaddr_un *a, const char *name, int abstract)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	size_t n = strlen(name);
	if (n + 2 > sizeof(a->sun_path)) {
		errno = ENAMETOOLONG;
		wl_die(name);
	}
	if (abstract) {
		memcpy(a->sun_path + 1, name, n);
		return offsetof(struct sockaddr_un, sun_path) + 1 + n;
	}
	memcpy(a->sun_path, name, n);
	return offsetof(struct sockaddr_un, sun_path) + n + 1;
}

static int sock(int type)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		wl_die("socket");
	return fd;
}

static int dial(int type, const char *name, int abstract)
{
	struct sockaddr_un a;
	socklen_t len = addr_of(&a, name, abstract);
	int fd = sock(type);
	if (connect(fd, (struct sockaddr *)&a, len) < 0)
		wl_die(name);
	return fd;
}

static int listener(int type, const char *name, int abstract)
{
	struct sockaddr_un a;
	socklen_t len = addr_of(&a, name, abstract);
	int fd = sock(type);
	if (bind(fd, (struct sockaddr *)&a, len) < 0 || listen(fd, 4) < 0)
		wl_die(name);
	return fd;
}

static struct ucred cred_of(int fd, const char *what)
{
	struct ucred c = { 0 };
	socklen_t len = sizeof(c);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &c, &len) < 0)
		wl_fail("%s: SO_PEERCRED: %s", what, strerror(errno));
	return c;
}

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* peer_pidfd_pid returns the pid SO_PEERPIDFD's pidfd on fd stands for
 * (its fdinfo's Pid:), or -1. */
static int peer_pidfd_pid(int fd, const char *what)
{
	int pfd = -1;
	socklen_t len = sizeof(pfd);
	if (getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pfd, &len) < 0) {
		wl_fail("%s: SO_PEERPIDFD: %s", what, strerror(errno));
		return -1;
	}
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", pfd);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	close(pfd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	const char *p = strstr(buf, "\nPid:");
	return p ? atoi(p + 5) : -1;
}

/* check compares fd's credentials with those recorded and those
 * expected; it appends what differed to out (the child's report) or
 * fails the workload (out NULL). */
static void check(int fd, const char *what, struct ucred before, pid_t pid, uid_t uid, gid_t gid, char *out, size_t cap)
{
	struct ucred now = cred_of(fd, what);
	char msg[512] = "";
	if (now.pid != before.pid || now.uid != before.uid || now.gid != before.gid)
		snprintf(msg, sizeof(msg), "%s: peer pid %d uid %d gid %d, at the dump pid %d uid %d gid %d", what, now.pid, (int)now.uid,
			 (int)now.gid, before.pid, (int)before.uid, (int)before.gid);
	else if (now.pid != pid || now.uid != uid || now.gid != gid)
		snprintf(msg, sizeof(msg), "%s: peer pid %d uid %d gid %d, want pid %d uid %d gid %d", what, now.pid, (int)now.uid, (int)now.gid,
			 pid, (int)uid, (int)gid);
	if (!msg[0])
		return;
	if (!out) {
		wl_fail("%s", msg);
		return;
	}
	size_t n = strlen(out);
	snprintf(out + n, cap - n, "%s%s", n ? "; " : "", msg);
}

static void send_fd(int sk, const char *msg, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	memset(cbuf, 0, sizeof(cbuf));
	struct iovec iov = { .iov_base = (void *)msg, .iov_len = strlen(msg) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sk, &mh, MSG_NOSIGNAL) != (ssize_t)strlen(msg))
		wl_die("sendmsg");
}

static int recv_fd(int sk, char *buf, size_t cap)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = buf, .iov_len = cap - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	ssize_t n;
	do
		n = recvmsg(sk, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		wl_die("recvmsg");
	buf[n] = 0;
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		wl_die("no fd received");
	int fd;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* read_reply reads one message from fd, waiting up to 20 s. */
static ssize_t read_reply(int fd, char *buf, size_t cap)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	double end = wl_now() + 20;
	for (;;) {
		int r = poll(&p, 1, 200);
		if (r > 0)
			break;
		if (r < 0 && errno != EINTR)
			return -1;
		if (wl_now() > end) {
			errno = ETIMEDOUT;
			return -1;
		}
	}
	ssize_t n = read(fd, buf, cap - 1);
	if (n >= 0)
		buf[n] = 0;
	return n;
}

static const char *lpath(void)
{
	static char p[256];
	wl_path(p, sizeof(p), "l.sock");
	return p;
}

static char qname[64];

static int child(pid_t parent, uid_t puid, gid_t pgid)
{
	if (setgroups(0, NULL) < 0 || setresgid(CHILD_ID, CHILD_ID, CHILD_ID) < 0 || setresuid(CHILD_ID, CHILD_ID, 0) < 0)
		wl_die("child: setres*id");
	/* Effective ids 1000, which the connections record; fsuid 0 only
	 * to reach DIR, which is root's. */
	setfsuid(0);
	int lc = dial(SOCK_STREAM, lpath(), 0);
	int qc = dial(SOCK_SEQPACKET, qname, 1);
	int lp = dial(SOCK_STREAM, lpath(), 0);
	int qp = dial(SOCK_SEQPACKET, qname, 1);
	if (setresuid(CHILD_ID, CHILD_ID, CHILD_ID) < 0)
		wl_die("child: setresuid");
	int cp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, cp) < 0)
		wl_die("child: socketpair");
	struct ucred blc = cred_of(lc, "lc"), bqc = cred_of(qc, "qc"), blp = cred_of(lp, "lp"), bqp = cred_of(qp, "qp"),
		     bcp = cred_of(cp[0], "cp0");
	send_fd(lc, "hello", cp[1]);
	close(cp[1]);

	char buf[64];
	ssize_t n;
	do
		n = read(lc, buf, sizeof(buf) - 1);
	while (n < 0 && errno == EINTR);
	if (n != 5 || memcmp(buf, "check", 5) != 0)
		_exit(4);
	static char out[4096];
	out[0] = 0;
	pid_t me = getpid();
	if (getppid() != parent)
		snprintf(out, sizeof(out), "child: parent %d, want %d", getppid(), parent);
	check(lc, "child lc (accepted from L)", blc, parent, puid, pgid, out, sizeof(out));
	check(qc, "child qc (accepted from Q)", bqc, parent, puid, pgid, out, sizeof(out));
	check(lp, "child lp (pending on L)", blp, parent, puid, pgid, out, sizeof(out));
	check(qp, "child qp (pending on Q)", bqp, parent, puid, pgid, out, sizeof(out));
	check(cp[0], "child cp0 (its socketpair)", bcp, me, CHILD_ID, CHILD_ID, out, sizeof(out));
	if (wl_failures[0]) {
		size_t k = strlen(out);
		snprintf(out + k, sizeof(out) - k, "%s%.2000s", k ? "; " : "", wl_failures);
	}
	const char *reply = out[0] ? out : "PASS";
	if (write(lc, reply, strlen(reply)) < 0)
		_exit(5);
	_exit(0);
}

#define NSOCK 14

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	pid_t me = getpid();
	uid_t uid = geteuid();
	gid_t gid = getegid();
	snprintf(qname, sizeof(qname), "ctcr-peercred-%d", me);

	int sp[2], dp[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0 || socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, dp) < 0)
		wl_die("socketpair");
	char dname[64];
	snprintf(dname, sizeof(dname), "ctcr-peercred-dgram-%d", me);
	struct sockaddr_un da;
	socklen_t dlen = addr_of(&da, dname, 1);
	int dl = sock(SOCK_DGRAM);
	if (bind(dl, (struct sockaddr *)&da, dlen) < 0)
		wl_die("bind dgram");
	int dc = dial(SOCK_DGRAM, dname, 1);
	unlink(lpath());
	int L = listener(SOCK_STREAM, lpath(), 0);
	int Q = listener(SOCK_SEQPACKET, qname, 1);

	int exited = argc > 2 && strcmp(argv[2], "exited") == 0;
	char xname[64];
	snprintf(xname, sizeof(xname), "ctcr-peercred-x-%d", me);
	int XL = -1, XC = -1;
	pid_t x = 0;
	if (exited) {
		int xp[2];
		if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, xp) < 0)
			wl_die("socketpair");
		x = fork();
		if (x < 0)
			wl_die("fork");
		if (x == 0) {
			send_fd(xp[1], "xl", listener(SOCK_STREAM, xname, 1));
			_exit(0);
		}
		char m[8];
		XL = recv_fd(xp[0], m, sizeof(m));
		close(xp[0]);
		close(xp[1]);
		int st;
		while (waitpid(x, &st, 0) < 0)
			if (errno != EINTR)
				wl_die("waitpid");
		XC = dial(SOCK_STREAM, xname, 1);
	}

	pid_t c = fork();
	if (c < 0)
		wl_die("fork");
	if (c == 0)
		return child(me, uid, gid);

	int la = accept4(L, NULL, NULL, SOCK_CLOEXEC);
	int qa = accept4(Q, NULL, NULL, SOCK_CLOEXEC);
	if (la < 0 || qa < 0)
		wl_die("accept");
	char hello[16];
	int cp1 = recv_fd(la, hello, sizeof(hello));

	struct {
		const char *name;
		int fd;
		pid_t pid;
		uid_t uid;
		gid_t gid;
	} s[NSOCK] = {
		{ "sp0", sp[0], me, uid, gid },
		{ "sp1", sp[1], me, uid, gid },
		{ "dp0", dp[0], me, uid, gid },
		{ "dp1", dp[1], me, uid, gid },
		{ "dl", dl, 0, (uid_t)-1, (gid_t)-1 },
		{ "dc", dc, 0, (uid_t)-1, (gid_t)-1 },
		{ "L", L, me, uid, gid },
		{ "Q", Q, me, uid, gid },
		{ "la", la, c, CHILD_ID, CHILD_ID },
		{ "qa", qa, c, CHILD_ID, CHILD_ID },
		{ "cp1", cp1, c, CHILD_ID, CHILD_ID },
		{ "XL", XL, x, uid, gid },
		{ "XC", XC, x, uid, gid },
		{ "", -1, 0, 0, 0 },
	};
	if (!exited)
		s[11].fd = -1;
	static char ready[8192];
	size_t off = snprintf(ready, sizeof(ready), "child %d\nx %d\n", c, x);
	int n = 0;
	for (; s[n].fd >= 0; n++) {
		struct ucred b = cred_of(s[n].fd, s[n].name);
		off += snprintf(ready + off, sizeof(ready) - off, "%s %d %d %d\n", s[n].name, b.pid, (int)b.uid, (int)b.gid);
	}
	wl_ready("%s", ready);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if ((pid_t)wl_saved_num("child") != c)
		wl_fail("child pid %d, %llu at the dump", c, wl_saved_num("child"));
	for (int i = 0; i < n; i++) {
		const char *v = wl_saved(s[i].name);
		struct ucred b = { 0, (uid_t)-2, (gid_t)-2 };
		int bu = 0, bg = 0;
		if (!v || sscanf(v, "%d %d %d", &b.pid, &bu, &bg) != 3)
			wl_fail("%s: nothing recorded at the dump", s[i].name);
		b.uid = bu;
		b.gid = bg;
		check(s[i].fd, s[i].name, b, s[i].pid, s[i].uid, s[i].gid, NULL, 0);
	}
	/* SO_PEERPIDFD names the same processes, alive. */
	int pp;
	if ((pp = peer_pidfd_pid(sp[0], "sp0")) != me)
		wl_fail("sp0: SO_PEERPIDFD's pidfd is of pid %d, want %d", pp, me);
	if ((pp = peer_pidfd_pid(la, "la")) != c)
		wl_fail("la: SO_PEERPIDFD's pidfd is of pid %d, want the child %d", pp, c);
	/* The pending connections: their accepted end's peer is the child,
	 * which connected them. */
	int fl = fcntl(L, F_GETFL);
	fcntl(L, F_SETFL, fl | O_NONBLOCK);
	fcntl(Q, F_SETFL, fcntl(Q, F_GETFL) | O_NONBLOCK);
	int lpa = accept4(L, NULL, NULL, SOCK_CLOEXEC);
	int qpa = accept4(Q, NULL, NULL, SOCK_CLOEXEC);
	if (lpa < 0 || qpa < 0)
		wl_fail("accept the pending connections: %s", strerror(errno));
	else {
		struct ucred want = { c, CHILD_ID, CHILD_ID };
		check(lpa, "lpa (pending on L, accepted after restore)", want, c, CHILD_ID, CHILD_ID, NULL, 0);
		check(qpa, "qpa (pending on Q, accepted after restore)", want, c, CHILD_ID, CHILD_ID, NULL, 0);
	}
	fcntl(L, F_SETFL, fl);
	/* A client that connects now copies the listener's credentials. */
	int late = dial(SOCK_STREAM, lpath(), 0);
	struct ucred want = { me, uid, gid };
	check(late, "a client connecting to L after restore", want, me, uid, gid, NULL, 0);
	if (exited) {
		int xlate = dial(SOCK_STREAM, xname, 1);
		struct ucred xwant = { x, uid, gid };
		check(xlate, "a client connecting to XL after restore", xwant, x, uid, gid, NULL, 0);
	}

	if (write(la, "check", 5) != 5)
		wl_fail("send check to the child: %s", strerror(errno));
	char reply[4096];
	if (read_reply(la, reply, sizeof(reply)) <= 0)
		wl_fail("no answer from the child: %s", strerror(errno));
	else if (strcmp(reply, "PASS") != 0)
		wl_fail("%s", reply);
	int st;
	pid_t w;
	do
		w = waitpid(c, &st, 0);
	while (w < 0 && errno == EINTR);
	if (w != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		wl_fail("child %d ended with status %#x", c, st);
	unlink(lpath());
	return wl_finish();
}
