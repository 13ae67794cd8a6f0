/*
 * traced: a task that another process traces.
 *
 * The workload forks a child that waits, and seizes it with
 * PTRACE_SEIZE: the child is then traced by the workload. ready says
 * "traced CHILD" and "tracer PID". A dump of the child must fail and
 * name its tracer. On DIR/check the workload detaches and kills the
 * child, reaps it and passes.
 */
#include "workload.h"

#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pid_t c = fork();
	if (c < 0)
		wl_die("fork");
	if (c == 0) {
		for (;;)
			pause();
	}
	if (ptrace(PTRACE_SEIZE, c, 0, 0) < 0)
		wl_die("PTRACE_SEIZE");
	wl_ready("traced %d\ntracer %d\nchild=%d\n", c, getpid(), c);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	kill(c, SIGKILL);
	int st;
	while (waitpid(c, &st, __WALL) == c && !WIFSIGNALED(st) && !WIFEXITED(st))
		;
	return wl_finish();
}
