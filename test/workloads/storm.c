/*
 * storm: a process that forks, or makes threads, while it is dumped.
 *
 *   storm fork     forks about 150 children a second; half exit at once,
 *                  the others after sleeping up to 20 ms; each exits 0
 *                  after checking a value it inherited. The workload
 *                  reaps them as it goes.
 *   storm thread   makes about 150 threads a second the same way; each
 *                  adds to a counter and exits; they are joined.
 *   storm fork2    as fork, but each child first makes a second thread,
 *                  so children die with more than one thread
 *
 * Both keep a checksummed buffer. After DIR/check the storm stops; the
 * workload reaps (or joins) what is left, and fails if any child exited
 * otherwise than 0, any thread missed its count, the buffer changed, or
 * the storm made fewer than 20.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/wait.h>

#define RATE 150

static uint64_t buf[4096];
static uint64_t seed = 0x9e3779b97f4a7c15ull;
static volatile uint64_t inherited;

static uint64_t next(void)
{
	seed ^= seed << 13;
	seed ^= seed >> 7;
	seed ^= seed << 17;
	return seed;
}

static uint64_t sum(void)
{
	uint64_t s = 0;
	for (size_t i = 0; i < sizeof(buf) / sizeof(buf[0]); i++)
		s = s * 31 + buf[i];
	return s;
}

static long made, bad;
static volatile long thread_count;

static void reap(int block)
{
	for (;;) {
		int st;
		pid_t r = waitpid(-1, &st, block ? 0 : WNOHANG);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			if (bad++ < 5)
				wl_fail("child %d: status %#x", r, st);
		}
	}
}

static void *thread(void *arg)
{
	long ms = (long)arg;
	if (ms)
		wl_sleep_ms(ms);
	__atomic_add_fetch(&thread_count, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int threads = argc > 2 && strcmp(argv[2], "thread") == 0;
	int two = argc > 2 && strcmp(argv[2], "fork2") == 0;
	for (size_t i = 0; i < sizeof(buf) / sizeof(buf[0]); i++)
		buf[i] = next();
	uint64_t want = sum();
	inherited = want;
	pthread_t tids[64];
	int ntids = 0;
	wl_ready("mode %s\nsum %llu\n", threads ? "thread" : "fork", (unsigned long long)want);
	double start = wl_now();
	while (!wl_check_requested()) {
		long ms = (next() & 1) ? 0 : (long)(next() % 20);
		if (threads) {
			if (ntids == 64) {
				for (int i = 0; i < ntids; i++)
					pthread_join(tids[i], NULL);
				ntids = 0;
			}
			if (pthread_create(&tids[ntids], NULL, thread, (void *)ms) == 0) {
				ntids++;
				made++;
			}
		} else {
			pid_t pid = fork();
			if (pid == 0) {
				pthread_t t2;
				if (two && pthread_create(&t2, NULL, thread, (void *)(ms + 50)))
					_exit(8);
				if (ms)
					wl_sleep_ms(ms);
				_exit(inherited == want ? 0 : 7);
			}
			if (pid > 0)
				made++;
			reap(0);
		}
		/* About RATE a second, whatever the dumps cost. */
		double due = start + (double)made / RATE;
		double now = wl_now();
		if (due > now)
			wl_sleep_ms((long)((due - now) * 1000) + 1);
	}
	double ran = wl_now() - start;
	if (threads) {
		for (int i = 0; i < ntids; i++)
			pthread_join(tids[i], NULL);
		if (thread_count != made)
			wl_fail("%ld threads made, %ld counted", made, (long)thread_count);
	} else {
		reap(1);
	}
	if (sum() != want)
		wl_fail("the buffer changed");
	/* The clock ran on while the process was dumped and gone: only ask
	 * for a storm worth the name. */
	if (made < 20)
		wl_fail("only %ld %s in %.1f s", made, threads ? "threads" : "children", ran);
	wl_printf("%ld %s in %.1f s\n", made, threads ? "threads" : "children", ran);
	return wl_finish();
}
