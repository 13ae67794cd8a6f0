/*
 * sched: a scheduling policy per thread.
 *
 *   main thread  SCHED_BATCH, nice 5
 *   thread 1     SCHED_IDLE
 *   thread 2     SCHED_FIFO, priority 10
 *   thread 3     SCHED_RR, priority 5, SCHED_RESET_ON_FORK
 *   thread 4     SCHED_OTHER, nice -3
 *
 * Each thread sets its own and, after restore, reads it back with
 * sched_getattr and compares policy, priority, nice and flags.
 * (RLIMIT_RTPRIO stays as it is: raising its hard limit needs
 * CAP_SYS_RESOURCE; root sets real-time policies with CAP_SYS_NICE.)
 * If the machine refuses a real-time policy (no CAP_SYS_NICE),
 * the workload says so in ready and checks the others only.
 */
#include "workload.h"

#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/syscall.h>

struct attr {
	uint32_t size;
	uint32_t policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

struct want {
	uint32_t policy;
	uint32_t prio;
	int nice;
	uint64_t flags;
	const char *name;
};

static struct want wants[5] = {
	{ SCHED_BATCH, 0, 5, 0, "main thread (SCHED_BATCH nice 5)" },
	{ SCHED_IDLE, 0, 0, 0, "thread 1 (SCHED_IDLE)" },
	{ SCHED_FIFO, 10, 0, 0, "thread 2 (SCHED_FIFO 10)" },
	{ SCHED_RR, 5, 0, SCHED_FLAG_RESET_ON_FORK, "thread 3 (SCHED_RR 5, reset on fork)" },
	{ SCHED_OTHER, 0, -3, 0, "thread 4 (SCHED_OTHER nice -3)" },
};

static volatile int set_done[5], check_now, checked[5];
static int rt_ok = 1;

static int set_mine(int i)
{
	struct attr a = { .size = sizeof(a), .policy = wants[i].policy, .flags = wants[i].flags,
			  .nice = wants[i].nice, .priority = wants[i].prio };
	return syscall(SYS_sched_setattr, 0, &a, 0);
}

static void check_mine(int i)
{
	struct attr a;
	memset(&a, 0, sizeof(a));
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) < 0) {
		wl_fail("%s: sched_getattr: %s", wants[i].name, strerror(errno));
		return;
	}
	struct want *w = &wants[i];
	int rt = w->policy == SCHED_FIFO || w->policy == SCHED_RR;
	if (rt && !rt_ok)
		return;
	if (a.policy != w->policy || a.priority != w->prio || (!rt && a.nice != w->nice) ||
	    (a.flags & SCHED_FLAG_RESET_ON_FORK) != w->flags)
		wl_fail("%s: policy %u priority %u nice %d flags %#llx", w->name, a.policy, a.priority, a.nice,
			(unsigned long long)a.flags);
}

static void *thread(void *arg)
{
	int i = (int)(intptr_t)arg;
	if (set_mine(i) < 0) {
		if (wants[i].policy == SCHED_FIFO || wants[i].policy == SCHED_RR)
			rt_ok = 0;
		else
			wl_die(wants[i].name);
	}
	set_done[i] = 1;
	while (!check_now)
		wl_sleep_ms(5);
	check_mine(i);
	checked[i] = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pthread_t th[5];
	for (int i = 1; i < 5; i++) {
		if (pthread_create(&th[i], NULL, thread, (void *)(intptr_t)i))
			wl_die("pthread_create");
		while (!set_done[i])
			wl_sleep_ms(1);
	}
	if (set_mine(0) < 0)
		wl_die(wants[0].name);
	wl_ready("realtime %d\n", rt_ok);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	check_now = 1;
	check_mine(0);
	for (int i = 1; i < 5; i++)
		pthread_join(th[i], NULL);
	if (!rt_ok)
		wl_printf("real-time policies refused here: checked the others\n");
	return wl_finish();
}
