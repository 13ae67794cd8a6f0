/*
 * killtree [P [T]]: a tree of P processes (4 by default), the root and
 * its P-1 children, each running T threads (4 by default, the main
 * thread included), every thread counting its own counter with a 1 ms
 * sleep between steps. Tests kill the tree, one of its processes or one
 * of its threads while ctcr dumps or restores it, so the tree keeps no
 * state a kill could leave half made: it only has to run.
 *
 * DIR/ready: "pid R", then "proc PID TID TID ..." per process (the
 * root's first), written once every thread of every process counts.
 *
 * After DIR/check each process checks that each of its threads still
 * counts (its counter grows within 2 s); a child exits 0 if they all
 * do, 1 otherwise; the root reaps its children, checks their statuses
 * and writes DIR/result.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define MAX_PROCS 64
#define MAX_THREADS 64

static int nthreads;
static atomic_ulong counters[MAX_THREADS];
static atomic_int tids[MAX_THREADS];

static void *count(void *arg)
{
	long i = (long)arg;
	atomic_store(&tids[i], (int)syscall(SYS_gettid));
	for (;;) {
		atomic_fetch_add(&counters[i], 1);
		wl_sleep_ms(1);
	}
	return NULL;
}

/* start_threads starts threads 1..T-1 and waits until each has counted. */
static void start_threads(void)
{
	atomic_store(&tids[0], (int)syscall(SYS_gettid));
	for (long i = 1; i < nthreads; i++) {
		pthread_t h;
		if (pthread_create(&h, NULL, count, (void *)i) != 0)
			wl_die("pthread_create");
	}
	for (int i = 1; i < nthreads; i++)
		while (atomic_load(&counters[i]) == 0)
			wl_sleep_ms(1);
}

/* describe writes "proc PID TID ..." into buf. */
static int describe(char *buf, size_t cap)
{
	int n = snprintf(buf, cap, "proc %d", getpid());
	for (int i = 0; i < nthreads && (size_t)n < cap; i++)
		n += snprintf(buf + n, cap - n, " %d", atomic_load(&tids[i]));
	if ((size_t)n < cap)
		n += snprintf(buf + n, cap - n, "\n");
	return n;
}

/* wait_check counts on the main thread until DIR/check appears, then
 * checks that every thread still counts. */
static void wait_check(void)
{
	while (!wl_check_requested()) {
		atomic_fetch_add(&counters[0], 1);
		wl_sleep_ms(1);
	}
	unsigned long before[MAX_THREADS];
	for (int i = 1; i < nthreads; i++)
		before[i] = atomic_load(&counters[i]);
	double deadline = wl_now() + 2;
	for (int i = 1; i < nthreads; i++) {
		while (atomic_load(&counters[i]) == before[i] && wl_now() < deadline)
			wl_sleep_ms(1);
		if (atomic_load(&counters[i]) == before[i])
			wl_fail("process %d thread %d: its counter stays at %lu", getpid(), atomic_load(&tids[i]), before[i]);
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int nprocs = argc > 2 ? atoi(argv[2]) : 4;
	nthreads = argc > 3 ? atoi(argv[3]) : 4;
	if (nprocs < 1 || nprocs > MAX_PROCS || nthreads < 1 || nthreads > MAX_THREADS) {
		fprintf(stderr, "killtree: 1..%d processes of 1..%d threads\n", MAX_PROCS, MAX_THREADS);
		return 2;
	}
	/* Each child reports its line on a pipe, once its threads count. */
	int p[2];
	if (pipe(p) < 0)
		wl_die("pipe");
	pid_t kids[MAX_PROCS];
	for (int k = 1; k < nprocs; k++) {
		kids[k] = fork();
		if (kids[k] < 0)
			wl_die("fork");
		if (kids[k] == 0) {
			close(p[0]);
			start_threads();
			char line[1024];
			int n = describe(line, sizeof(line));
			if (write(p[1], line, n) != n)
				wl_die("write to the root");
			close(p[1]);
			wait_check();
			if (wl_failures[0]) {
				fprintf(stderr, "%s\n", wl_failures);
				_exit(1);
			}
			_exit(0);
		}
	}
	close(p[1]);
	start_threads();
	static char ready[1 << 15];
	int n = snprintf(ready, sizeof(ready), "pid %d\n", getpid());
	n += describe(ready + n, sizeof(ready) - n);
	/* Lines of at most 1 KiB written in one write(2) to a pipe arrive
	 * whole (PIPE_BUF). */
	for (int k = 1; k < nprocs; k++) {
		char line[1024];
		int i = 0;
		for (;;) {
			ssize_t r = read(p[0], line + i, 1);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				wl_die("read a child's line");
			if (line[i++] == '\n' || i == (int)sizeof(line) - 1)
				break;
		}
		line[i] = 0;
		n += snprintf(ready + n, sizeof(ready) - n, "%s", line);
	}
	close(p[0]);
	wl_write_file("ready", ready, n);
	wait_check();
	for (int k = 1; k < nprocs; k++) {
		int st;
		pid_t r;
		while ((r = waitpid(kids[k], &st, 0)) < 0 && errno == EINTR)
			;
		if (r < 0)
			wl_fail("waitpid %d: %s", kids[k], strerror(errno));
		else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			wl_fail("child %d: status %#x (its stderr says why)", kids[k], st);
	}
	return wl_finish();
}
