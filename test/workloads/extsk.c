/*
 * extsk: unix sockets connected to sockets outside the dumped tree,
 * owned by the test (checkpointed with --ext-unix-sk).
 *
 *   extsk DIR DGRAM_PATH STREAM_PATH
 *
 *   dgram     bound to DIR/wl.sock, connected to DGRAM_PATH; the test
 *             sends it "queued-before-dump", which stays queued across
 *             the dump
 *   accepted  a stream connection to STREAM_PATH that the test accepted
 *             (it reads "stream-before" from it before the dump)
 *   pending   a stream connection to STREAM_PATH the test never accepts
 *             (still in the listener's backlog when dumped)
 *
 * The test sends the datagram once DIR/ready exists, before the dump.
 *
 * After restore, on DIR/check: each socket must still be connected to
 * its path (getpeername), the queued datagram must be read back whole,
 * then "dgram-after", "accepted-after" and "pending-after" are sent on
 * the three sockets, which the test must receive.
 */
#include "workload.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

static void addr_of(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path)) {
		errno = ENAMETOOLONG;
		wl_die(path);
	}
	strcpy(a->sun_path, path);
}

static int connected(int type, const char *path)
{
	int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		wl_die("socket");
	struct sockaddr_un a;
	addr_of(&a, path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_die(path);
	return fd;
}

static void send_all(int fd, const char *what, const char *msg)
{
	ssize_t n = send(fd, msg, strlen(msg), MSG_NOSIGNAL);
	if (n != (ssize_t)strlen(msg))
		wl_fail("%s: send %s: %zd (%s)", what, msg, n, n < 0 ? strerror(errno) : "short");
}

static void check_peer(int fd, const char *what, const char *want)
{
	struct sockaddr_un a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getpeername(fd, (struct sockaddr *)&a, &len) < 0) {
		wl_fail("%s: getpeername: %s", what, strerror(errno));
		return;
	}
	if (len <= offsetof(struct sockaddr_un, sun_path) || strcmp(a.sun_path, want) != 0)
		wl_fail("%s: connected to %.*s, want %s", what, (int)(len - offsetof(struct sockaddr_un, sun_path)), a.sun_path, want);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc != 4) {
		fprintf(stderr, "usage: extsk DIR DGRAM_PATH STREAM_PATH\n");
		return 2;
	}
	const char *dpath = argv[2], *spath = argv[3];

	int dg = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (dg < 0)
		wl_die("socket");
	struct sockaddr_un me;
	char mine[4096];
	wl_path(mine, sizeof(mine), "wl.sock");
	addr_of(&me, mine);
	if (bind(dg, (struct sockaddr *)&me, sizeof(me)) < 0)
		wl_die(mine);
	struct sockaddr_un peer;
	addr_of(&peer, dpath);
	if (connect(dg, (struct sockaddr *)&peer, sizeof(peer)) < 0)
		wl_die(dpath);
	int acc = connected(SOCK_STREAM, spath);
	int pend = connected(SOCK_STREAM, spath);
	send_all(dg, "dgram", "dgram-before");
	send_all(acc, "accepted", "stream-before");
	if (wl_failures[0])
		return wl_finish();

	wl_ready("dgram %d\naccepted %d\npending %d\n", dg, acc, pend);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	check_peer(dg, "dgram", dpath);
	check_peer(acc, "accepted", spath);
	check_peer(pend, "pending", spath);
	char buf[256];
	ssize_t n = recv(dg, buf, sizeof(buf) - 1, MSG_DONTWAIT);
	if (n < 0)
		wl_fail("dgram: the datagram queued before the dump is gone: %s", strerror(errno));
	else {
		buf[n] = 0;
		if (strcmp(buf, "queued-before-dump") != 0)
			wl_fail("dgram: read %zd bytes %s, want queued-before-dump", n, buf);
		if (recv(dg, buf, sizeof(buf), MSG_DONTWAIT) >= 0)
			wl_fail("dgram: a second datagram is queued");
	}
	send_all(dg, "dgram", "dgram-after");
	send_all(acc, "accepted", "accepted-after");
	send_all(pend, "pending", "pending-after");
	return wl_finish();
}
