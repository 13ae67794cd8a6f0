/*
 * seqpacket: a SOCK_SEQPACKET socketpair A, B whose writer side has shut
 * down: A sent "one", an empty message and "three" to B, then
 * shutdown(A, SHUT_WR).
 *
 * A non-blocking peek at B past its last message answers 0 (end of
 * file), not EAGAIN, for ever: a dump that reads B's queue until EAGAIN
 * never returns.
 *
 * After restore B reads "one", the empty message, "three", then end of
 * file, each message whole and in order; A cannot send (EPIPE), and B
 * can still send to A.
 */
#include "workload.h"

#include <signal.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	signal(SIGPIPE, SIG_IGN);
	int sp[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sp) < 0)
		wl_die("socketpair");
	if (send(sp[0], "one", 3, 0) != 3 || send(sp[0], "", 0, 0) != 0 || send(sp[0], "three", 5, 0) != 5)
		wl_die("send");
	if (shutdown(sp[0], SHUT_WR) < 0)
		wl_die("shutdown");

	wl_ready("a %d\nb %d\n", sp[0], sp[1]);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	const char *want[3] = { "one", "", "three" };
	for (int i = 0; i < 3; i++) {
		char buf[64];
		ssize_t n = recv(sp[1], buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0) {
			wl_fail("message %d: %s, want %zu bytes \"%s\"", i + 1, strerror(errno), strlen(want[i]), want[i]);
			break;
		}
		if ((size_t)n != strlen(want[i]) || memcmp(buf, want[i], n) != 0)
			wl_fail("message %d is \"%.*s\" (%zd bytes), want \"%s\"", i + 1, (int)(n > 0 ? n : 0), buf, n, want[i]);
	}
	char buf[64];
	ssize_t n = recv(sp[1], buf, sizeof(buf), MSG_DONTWAIT);
	if (n != 0)
		wl_fail("after the 3 messages B read %zd (%s), want 0: end of file", n, n < 0 ? strerror(errno) : "data");
	if (send(sp[0], "x", 1, MSG_DONTWAIT) != -1 || errno != EPIPE)
		wl_fail("A could send after shutdown(SHUT_WR): %s", strerror(errno));
	if (send(sp[1], "back", 4, MSG_DONTWAIT) != 4)
		wl_fail("B could not send to A: %s", strerror(errno));
	else if ((n = recv(sp[0], buf, sizeof(buf), MSG_DONTWAIT)) != 4 || memcmp(buf, "back", 4) != 0)
		wl_fail("A read %zd bytes from B, want \"back\"", n);
	return wl_finish();
}
