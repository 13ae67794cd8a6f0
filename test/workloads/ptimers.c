/*
 * ptimers: POSIX timers (timer_create).
 *
 *   A  CLOCK_MONOTONIC, SIGUSR1 to the process with value 0x1234, every
 *      50 ms: a handler counts the ticks and keeps si_value and
 *      si_timerid
 *   B  CLOCK_REALTIME, no signal (SIGEV_NONE), once in 1000 s
 *   C  CLOCK_MONOTONIC, SIGUSR2 to a worker thread (SIGEV_THREAD_ID), in
 *      500 s then every 3 s
 *
 * After restore /proc/self/timers reads the same (ids, signals, targets,
 * clocks), A goes on ticking with its value and id, and B and C have the
 * time they had left, minus the time that passed.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>

static volatile long ticks;
static volatile long last_value, last_timerid;

static void on_tick(int sig, siginfo_t *si, void *ctx)
{
	(void)sig;
	(void)ctx;
	ticks++;
	last_value = (long)si->si_value.sival_ptr;
	last_timerid = si->si_timerid;
}

static volatile pid_t worker_tid;

static void *worker(void *arg)
{
	(void)arg;
	worker_tid = syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

/* timers_hash hashes /proc/self/timers (FNV-1a). */
static unsigned long long timers_hash(void)
{
	char buf[4096];
	int fd = open("/proc/self/timers", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf));
	if (fd >= 0)
		close(fd);
	unsigned long long h = 1469598103934665603ULL;
	for (ssize_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)buf[i]) * 1099511628211ULL;
	return h;
}

static double left(timer_t t, double *interval)
{
	struct itimerspec its;
	if (timer_gettime(t, &its) < 0) {
		wl_fail("timer_gettime: %s", strerror(errno));
		return -1;
	}
	*interval = its.it_interval.tv_sec + its.it_interval.tv_nsec / 1e9;
	return its.it_value.tv_sec + its.it_value.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	struct sigaction sa = { .sa_sigaction = on_tick, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGUSR2, SIG_IGN);
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		wl_die("pthread_create");
	while (!worker_tid)
		wl_sleep_ms(1);

	timer_t a, b, c;
	struct sigevent sa_ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1 };
	sa_ev.sigev_value.sival_ptr = (void *)0x1234;
	struct sigevent sb_ev = { .sigev_notify = SIGEV_NONE };
	struct sigevent sc_ev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR2 };
	sc_ev._sigev_un._tid = worker_tid;
	if (timer_create(CLOCK_MONOTONIC, &sa_ev, &a) || timer_create(CLOCK_REALTIME, &sb_ev, &b) ||
	    timer_create(CLOCK_MONOTONIC, &sc_ev, &c))
		wl_die("timer_create");
	struct itimerspec ia = { .it_interval = { 0, 50000000 }, .it_value = { 0, 50000000 } };
	struct itimerspec ib = { .it_value = { 1000, 0 } };
	struct itimerspec ic = { .it_interval = { 3, 0 }, .it_value = { 500, 0 } };
	if (timer_settime(a, 0, &ia, NULL) || timer_settime(b, 0, &ib, NULL) || timer_settime(c, 0, &ic, NULL))
		wl_die("timer_settime");
	while (ticks < 3)
		wl_sleep_ms(10);

	wl_ready("a %ld\nhash %llu\n", (long)(intptr_t)a, timers_hash());
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (timers_hash() != wl_saved_num("hash"))
		wl_fail("/proc/self/timers reads otherwise than before the dump");
	long before = ticks;
	double end = wl_now() + 2;
	while (ticks < before + 4 && wl_now() < end)
		wl_sleep_ms(10);
	if (ticks < before + 4)
		wl_fail("timer A ticked %ld times in 2 s after the check began, want 4 or more", ticks - before);
	if (last_value != 0x1234 || last_timerid != (long)wl_saved_num("a"))
		wl_fail("timer A's signal came with value %#lx, timer id %ld; want 0x1234, %llu", last_value, last_timerid,
			wl_saved_num("a"));
	double iv;
	double lb = left(b, &iv);
	if (lb <= 900 || lb > 1000 || iv != 0)
		wl_fail("timer B has %.1f s left every %.1f s, want 900-1000 s, once", lb, iv);
	double lc = left(c, &iv);
	if (lc <= 400 || lc > 500 || iv != 3)
		wl_fail("timer C has %.1f s left every %.1f s, want 400-500 s, every 3 s", lc, iv);
	return wl_finish();
}
