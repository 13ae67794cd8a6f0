/*
 * skunlinked DIR SOCKDIR: listening unix sockets whose path was unlinked
 * or taken by another file after bind (SOCKDIR is short: a socket's path
 * has 107 bytes at most).
 *
 *   A  bound to SOCKDIR/a.sock, which was then unlinked: nothing is there
 *   B  bound to SOCKDIR/b.sock, unlinked, and C, a new listener, bound to
 *      SOCKDIR/b.sock (a server restarting while its old socket lives on)
 *   D  bound to SOCKDIR/d.sock, unlinked, and a regular file holding "keep"
 *      made at SOCKDIR/d.sock
 *
 * After restore A, B and D must still be called by their paths
 * (getsockname) while no file leads to them; SOCKDIR/a.sock must not exist,
 * SOCKDIR/b.sock must lead to C (a connection to it is C's, not B's), and
 * SOCKDIR/d.sock must be the regular file, still holding "keep".
 */
#include "workload.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static char pa[108], pb[108], pd[108];

static int listener(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	memcpy(a.sun_path, path, sizeof(a.sun_path));
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 8) < 0)
		wl_die(path);
	return l;
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
	if (argc < 3) {
		fprintf(stderr, "usage: skunlinked DIR SOCKDIR\n");
		return 2;
	}
	snprintf(pa, sizeof(pa), "%s/a.sock", argv[2]);
	snprintf(pb, sizeof(pb), "%s/b.sock", argv[2]);
	snprintf(pd, sizeof(pd), "%s/d.sock", argv[2]);
	int a = listener(pa);
	unlink(pa);
	int b = listener(pb);
	unlink(pb);
	int c = listener(pb);
	int d = listener(pd);
	unlink(pd);
	int f = open(pd, O_WRONLY | O_CREAT | O_EXCL, 0600);
	if (f < 0 || write(f, "keep", 4) != 4 || close(f) < 0)
		wl_die(pd);
	wl_ready("ok 1\n");
	while (!wl_check_requested())
		wl_sleep_ms(10);

	check_name(a, pa, "A");
	check_name(b, pb, "B");
	check_name(c, pb, "C");
	check_name(d, pd, "D");
	struct stat st;
	if (lstat(pa, &st) == 0)
		wl_fail("%s exists again (mode %#o): A's name was unlinked", pa, st.st_mode);
	if (lstat(pd, &st) < 0 || !S_ISREG(st.st_mode))
		wl_fail("%s is no longer the regular file put there", pd);
	else {
		char buf[16] = { 0 };
		int fd = open(pd, O_RDONLY);
		if (fd < 0 || read(fd, buf, sizeof(buf) - 1) != 4 || strcmp(buf, "keep") != 0)
			wl_fail("%s holds \"%s\", want \"keep\"", pd, buf);
		if (fd >= 0)
			close(fd);
	}
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	memcpy(sa.sun_path, pb, sizeof(pb));
	int n = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(n, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		wl_fail("connect to %s: %s", pb, strerror(errno));
	struct pollfd pf = { .fd = c, .events = POLLIN };
	if (poll(&pf, 1, 2000) != 1)
		wl_fail("C got no connection made to %s", pb);
	if (accept(b, NULL, NULL) >= 0)
		wl_fail("B, whose name was unlinked, accepted a connection made to %s", pb);
	if (accept(a, NULL, NULL) >= 0 || accept(d, NULL, NULL) >= 0)
		wl_fail("A or D accepted a connection no one could make");
	return wl_finish();
}
