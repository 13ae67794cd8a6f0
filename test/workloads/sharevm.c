/*
 * sharevm: a child cloned with CLONE_VM | CLONE_SIGHAND (a process, not
 * a thread) shares its parent's memory and signal handlers. After
 * restore the parent must see the child's writes to an ordinary global,
 * and a handler the child installs.
 */
#include "workload.h"

#include <sched.h>
#include <signal.h>
#include <sys/wait.h>

static volatile long counter;
static volatile int cmd, done;
static char stack[64 * 1024] __attribute__((aligned(16)));

static void on_usr2(int sig)
{
	(void)sig;
}

static int child(void *arg)
{
	(void)arg;
	for (;;) {
		counter++;
		if (cmd == 1 && !done) {
			struct sigaction sa = {.sa_handler = on_usr2};
			sigaction(SIGUSR2, &sa, NULL);
			done = 1;
		}
		wl_sleep_ms(5);
	}
	return 0;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pid_t pid = clone(child, stack + sizeof(stack), CLONE_VM | CLONE_SIGHAND | SIGCHLD, NULL);
	if (pid < 0)
		wl_die("clone");
	while (counter < 10)
		wl_sleep_ms(5);
	wl_ready("child=%d\n", pid);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	long a = counter;
	wl_sleep_ms(200);
	if (counter <= a)
		wl_fail("the child's writes are not seen: %ld then %ld (memory no longer shared)", a, counter);
	cmd = 1;
	for (int i = 0; i < 400 && !done; i++)
		wl_sleep_ms(5);
	struct sigaction cur;
	sigaction(SIGUSR2, NULL, &cur);
	if (!done || cur.sa_handler != on_usr2)
		wl_fail("the handler the child installed is not the parent's (signal handlers no longer shared)");
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return wl_finish();
}
