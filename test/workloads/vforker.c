/*
 * vforker: a parent waiting in vfork. ptrace cannot stop a task there.
 *
 *   (no argument) the child neither execs nor exits: ctcr must refuse
 *                 the dump, naming the task, instead of hanging; nothing
 *                 is checked after restore
 *   late [MS]     the child execs `sleep 1000` MS ms (300 if not given)
 *                 after the workload is ready: a dump started meanwhile
 *                 waits for the parent to be let go, and the tree (parent
 *                 and sleep) is dumped and restored; the parent then
 *                 checks its child runs
 */
#include "workload.h"

#include <signal.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int late = argc > 2 && strcmp(argv[2], "late") == 0;
	pid_t child = vfork();
	if (child == 0) {
		wl_ready("vfork child\n");
		if (late) {
			long ms = argc > 3 ? atol(argv[3]) : 300;
			struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
			nanosleep(&ts, NULL);
			execl("/bin/sleep", "sleep", "1000", (char *)NULL);
			_exit(127);
		}
		for (;;)
			pause();
	}
	while (!wl_check_requested())
		wl_sleep_ms(10);
	if (kill(child, 0) < 0)
		wl_fail("the child %d is gone: %s", (int)child, strerror(errno));
	kill(child, SIGKILL);
	return wl_finish();
}
