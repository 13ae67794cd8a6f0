/*
 * skrelative: unix sockets bound to relative paths. The workload moves
 * into DIR/sub and binds there, by names relative to that directory: a
 * listening stream socket "rel.sock" with one accepted connection, and
 * a datagram socket "dg.sock". /proc/net/unix and sock_diag then show
 * the names as bind got them, relative.
 *
 * After restore each socket must still be called by its relative name
 * (getsockname), the files must be DIR/sub/rel.sock and DIR/sub/dg.sock
 * and lead to these sockets: a new connection to "rel.sock" is accepted
 * by the listener, a datagram sent to "dg.sock" arrives, and the
 * connection accepted before the dump carries bytes both ways.
 */
#include "workload.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <stddef.h>
#include <sys/un.h>

static struct sockaddr_un addr(const char *name, socklen_t *len)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", name);
	*len = offsetof(struct sockaddr_un, sun_path) + strlen(name) + 1;
	return a;
}

static void check_name(int fd, const char *want, const char *what)
{
	struct sockaddr_un a;
	socklen_t len = sizeof(a);
	memset(&a, 0, sizeof(a));
	if (getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		wl_fail("%s: getsockname: %s", what, strerror(errno));
	else if (strcmp(a.sun_path, want) != 0)
		wl_fail("%s is called \"%s\", was \"%s\"", what, a.sun_path, want);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char sub[4096];
	snprintf(sub, sizeof(sub), "%s/sub", argv[1]);
	if (mkdir(sub, 0755) < 0 && errno != EEXIST)
		wl_die(sub);
	if (chdir(sub) < 0)
		wl_die(sub);
	socklen_t len;
	struct sockaddr_un a = addr("rel.sock", &len);
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, len) < 0 || listen(l, 8) < 0)
		wl_die("bind rel.sock");
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, len) < 0)
		wl_die("connect rel.sock");
	int s = accept(l, NULL, NULL);
	if (s < 0)
		wl_die("accept");
	struct sockaddr_un d = addr("dg.sock", &len);
	int g = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (g < 0 || bind(g, (struct sockaddr *)&d, len) < 0)
		wl_die("bind dg.sock");
	struct stat lst, gst;
	if (stat("rel.sock", &lst) < 0 || stat("dg.sock", &gst) < 0)
		wl_die("stat");
	wl_ready("listener %llu\n", (unsigned long long)lst.st_ino);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	check_name(l, "rel.sock", "the listener");
	check_name(s, "rel.sock", "the accepted connection");
	check_name(g, "dg.sock", "the datagram socket");
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, sub) != 0)
		wl_fail("working directory %s, was %s", cwd, sub);
	struct stat st;
	char full[4200];
	snprintf(full, sizeof(full), "%s/rel.sock", sub);
	if (stat(full, &st) < 0 || !S_ISSOCK(st.st_mode))
		wl_fail("%s is no socket file", full);

	/* A new connection by the relative name reaches the listener. */
	a = addr("rel.sock", &len);
	int n = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (connect(n, (struct sockaddr *)&a, len) < 0)
		wl_fail("connect to rel.sock after restore: %s", strerror(errno));
	struct pollfd pf = { .fd = l, .events = POLLIN };
	if (poll(&pf, 1, 2000) != 1)
		wl_fail("the listener got no connection to rel.sock");
	else {
		int x = accept(l, NULL, NULL);
		if (x < 0)
			wl_fail("accept: %s", strerror(errno));
		close(x);
	}
	close(n);
	/* A datagram by the relative name reaches the datagram socket. */
	int u = socket(AF_UNIX, SOCK_DGRAM, 0);
	d = addr("dg.sock", &len);
	if (sendto(u, "dgram", 5, 0, (struct sockaddr *)&d, len) != 5)
		wl_fail("send to dg.sock: %s", strerror(errno));
	char buf[16];
	pf.fd = g;
	if (poll(&pf, 1, 2000) != 1 || recv(g, buf, sizeof(buf), 0) != 5 || memcmp(buf, "dgram", 5) != 0)
		wl_fail("dg.sock did not receive the datagram sent to it");
	/* The connection accepted before the dump. */
	if (write(c, "ab", 2) != 2 || read(s, buf, 2) != 2 || memcmp(buf, "ab", 2) != 0)
		wl_fail("the accepted connection does not carry bytes from the client");
	if (write(s, "cd", 2) != 2 || read(c, buf, 2) != 2 || memcmp(buf, "cd", 2) != 0)
		wl_fail("the accepted connection does not carry bytes to the client");
	return wl_finish();
}
