/*
 * counter: counts in a loop and prints "count N" to stdout every ~100 ms.
 * After restore it checks that the counter went on from at least the value
 * it had at ready, that its PID is unchanged and that its parent is alive.
 */
#include "workload.h"

#include <signal.h>

static volatile unsigned long counter;

static void count(unsigned long n)
{
	for (unsigned long i = 0; i < n; i++)
		counter++;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	count(1000000);
	unsigned long at_ready = counter;
	wl_printf("count %lu\n", at_ready);
	wl_ready("pid %d\nppid %d\ncounter %lu\n", getpid(), getppid(), at_ready);

	double last_print = wl_now();
	while (!wl_check_requested()) {
		count(100000);
		wl_sleep_ms(10);
		if (wl_now() - last_print >= 0.1) {
			wl_printf("count %lu\n", counter);
			last_print = wl_now();
		}
	}

	unsigned long saved = wl_saved_num("counter");
	int pid = wl_saved_num("pid");
	if (counter <= saved)
		wl_fail("counter %lu did not go on from %lu", counter, saved);
	if (getpid() != pid)
		wl_fail("getpid() %d != pid %d at ready", getpid(), pid);
	pid_t ppid = getppid();
	if (ppid <= 0 || kill(ppid, 0) != 0)
		wl_fail("getppid() %d is not a live process", ppid);
	wl_printf("resumed: counter %lu (ready %lu), ppid %d\n", counter, saved, ppid);
	return wl_finish();
}
