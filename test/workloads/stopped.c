/*
 * stopped: tasks stopped by job control come back stopped.
 *
 *   stopped self     the workload stops itself with SIGSTOP
 *   stopped threads  the same with two more threads: the whole thread
 *                    group is stopped
 *   stopped pgrp     two children in a process group of their own stop
 *                    themselves with SIGTSTP (a handler-less default
 *                    stop); the workload itself runs on
 *
 * The test checks from outside that the stopped tasks are in state T
 * after restore (and stay so), then sends SIGCONT (to the process group
 * in pgrp mode). Each resumed task checks its memory, that its SIGCONT
 * handler ran once since it stopped, and, for threads, that each thread
 * is alive and counts on. In pgrp mode the workload reaps both children
 * (each exits 0 if its checks passed) and reports.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t conts;
static volatile unsigned long ticks[2];
static unsigned long pattern[1024];

static void on_cont(int sig)
{
	(void)sig;
	conts++;
}

static void fill(unsigned long seed)
{
	for (int i = 0; i < 1024; i++)
		pattern[i] = seed * 2654435761u + i;
}

static int check_fill(unsigned long seed)
{
	for (int i = 0; i < 1024; i++)
		if (pattern[i] != seed * 2654435761u + i)
			return 0;
	return 1;
}

static void *counter(void *arg)
{
	volatile unsigned long *t = arg;
	for (;;) {
		(*t)++;
		wl_sleep_ms(1);
	}
	return NULL;
}

static void handle_cont(void)
{
	struct sigaction sa = { .sa_handler = on_cont };
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	if (sigaction(SIGCONT, &sa, NULL) < 0)
		wl_die("sigaction");
}

/* stop_and_check stops the calling process with sig and, once it runs
 * again, checks what it can see; returns 0 if all is well. */
static int stop_and_check(int sig, unsigned long seed)
{
	fill(seed);
	conts = 0;
	raise(sig);
	/* Running again: only a SIGCONT gets here. */
	int ok = 1;
	for (int i = 0; i < 200 && !conts; i++)
		wl_sleep_ms(5);
	if (conts != 1) {
		wl_fail("task %d: SIGCONT handler ran %d times, want once", getpid(), (int)conts);
		ok = 0;
	}
	if (!check_fill(seed)) {
		wl_fail("task %d: memory differs after restore", getpid());
		ok = 0;
	}
	return ok;
}

static int self_mode(int threads)
{
	pthread_t th[2];
	if (threads) {
		for (int i = 0; i < 2; i++)
			if (pthread_create(&th[i], NULL, counter, (void *)&ticks[i]))
				wl_die("pthread_create");
		wl_sleep_ms(20);
	}
	wl_ready("stopped %d\nthreads %d\n", getpid(), threads ? 3 : 1);
	stop_and_check(SIGSTOP, 7);
	if (threads) {
		unsigned long before[2] = { ticks[0], ticks[1] };
		wl_sleep_ms(100);
		for (int i = 0; i < 2; i++)
			if (ticks[i] == before[i])
				wl_fail("thread %d does not count after SIGCONT", i + 1);
	}
	return wl_finish();
}

static int pgrp_mode(void)
{
	pid_t kids[2];
	pid_t leader = 0;
	for (int i = 0; i < 2; i++) {
		kids[i] = fork();
		if (kids[i] < 0)
			wl_die("fork");
		if (kids[i] == 0) {
			if (setpgid(0, leader) < 0)
				_exit(3);
			int ok = stop_and_check(SIGTSTP, 100 + i);
			/* Report through the exit status; the parent writes result. */
			if (!ok) {
				char name[32];
				snprintf(name, sizeof(name), "kid%d", i);
				wl_write_file(name, wl_failures, strlen(wl_failures));
			}
			_exit(ok ? 0 : 1);
		}
		setpgid(kids[i], leader ? leader : kids[i]); /* either side may win the race */
		if (!leader)
			leader = kids[i];
	}
	for (int i = 0; i < 2; i++) {
		int st;
		if (waitpid(kids[i], &st, WUNTRACED) != kids[i] || !WIFSTOPPED(st))
			wl_die("child did not stop");
	}
	wl_ready("stopped %d\nstopped %d\npgrp %d\nchild=%d\nchild=%d\n", kids[0], kids[1], leader, kids[0], kids[1]);
	for (int i = 0; i < 2; i++) {
		int st;
		pid_t r;
		do
			r = waitpid(kids[i], &st, 0);
		while (r < 0 && errno == EINTR);
		if (r != kids[i])
			wl_fail("waitpid(%d): %s", kids[i], strerror(errno));
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			char name[32], why[1024] = "";
			snprintf(name, sizeof(name), "kid%d", i);
			wl_read_file(name, why, sizeof(why));
			wl_fail("child %d: status %#x: %s", kids[i], st, why);
		}
	}
	return wl_finish();
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	handle_cont();
	const char *mode = argc > 2 ? argv[2] : "self";
	if (strcmp(mode, "self") == 0)
		return self_mode(0);
	if (strcmp(mode, "threads") == 0)
		return self_mode(1);
	if (strcmp(mode, "pgrp") == 0)
		return pgrp_mode();
	fprintf(stderr, "unknown mode %s\n", mode);
	return 2;
}
