/*
 * skstale PATH: a listening unix stream socket bound to PATH, which the
 * test finds still there at restore (a socket file the dumped socket
 * left behind, or one a live socket is bound to).
 *
 * After restore the socket must be called PATH, PATH must be a socket
 * file leading to it: a connection to PATH is accepted by it.
 */
#include "workload.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3) {
		fprintf(stderr, "usage: skstale DIR PATH\n");
		return 2;
	}
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", argv[2]);
	int l = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 8) < 0)
		wl_die(argv[2]);
	wl_ready("path %s\n", argv[2]);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct sockaddr_un g;
	socklen_t len = sizeof(g);
	memset(&g, 0, sizeof(g));
	if (getsockname(l, (struct sockaddr *)&g, &len) < 0 || strcmp(g.sun_path, argv[2]) != 0)
		wl_fail("the listener is called \"%s\", was \"%s\"", g.sun_path, argv[2]);
	int n = socket(AF_UNIX, SOCK_STREAM, 0);
	if (connect(n, (struct sockaddr *)&a, sizeof(a)) < 0)
		wl_fail("connect to %s: %s", argv[2], strerror(errno));
	struct pollfd pf = { .fd = l, .events = POLLIN };
	if (poll(&pf, 1, 2000) != 1 || accept(l, NULL, NULL) < 0)
		wl_fail("the listener got no connection made to %s", argv[2]);
	return wl_finish();
}
