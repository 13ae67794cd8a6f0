/*
 * threads [N]: N threads (64 by default) each counting its own counter,
 * each with its own name, blocked signal mask, alternate signal stack and
 * thread-local index.
 *
 *   thread i: name "cnt-i" (pthread_setname_np); blocks SIGRTMIN+(i%8),
 *   SIGUSR2 if i is odd, SIGHUP if i%3 == 0; sigaltstack on its own 64 KiB
 *   mapping; __thread index i; counts, sleeping 1 ms every 256 steps.
 *
 * DIR/ready holds the PID and, per thread, its TID and its counter when
 * ready was written. After restore (DIR/check) every thread checks itself:
 * gettid(), its name, its mask, its sigaltstack, its thread-local index,
 * and that a SIGUSR1 (SA_ONSTACK) it sends itself runs on its alternate
 * stack. The main thread then checks that every counter is at least its
 * ready value and still increases.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define MAX_THREADS 1024
#define ALTSTACK_SIZE (64 << 10)

enum { RUN, CHECK, STOP };

struct thread {
	pthread_t handle;
	int index;
	pid_t tid;       /* gettid() at start */
	pid_t saved_tid; /* the TID in ready, read back before CHECK */
	volatile unsigned long counter;
	void *altstack;
	atomic_int checked;
	char failure[512];
};

static struct thread threads[MAX_THREADS];
static int nthreads = 64;
static atomic_int phase, started;

static __thread int tls_index = -1;
static __thread volatile uintptr_t tls_handler_sp;

static void on_usr1(int sig)
{
	(void)sig;
	tls_handler_sp = (uintptr_t)__builtin_frame_address(0);
}

static int blocks(int i, int sig)
{
	return sig == SIGRTMIN + i % 8 || (sig == SIGUSR2 && i % 2) || (sig == SIGHUP && i % 3 == 0);
}

static void thread_name(int i, char *buf, size_t cap)
{
	snprintf(buf, cap, "cnt-%d", i);
}

static void thread_fail(struct thread *th, const char *fmt, ...)
{
	size_t len = strlen(th->failure);
	if (len + 3 >= sizeof(th->failure))
		return;
	if (len) {
		strcpy(th->failure + len, ", ");
		len += 2;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(th->failure + len, sizeof(th->failure) - len, fmt, ap);
	va_end(ap);
}

/* check_self runs in the thread: everything that is per thread. */
static void check_self(struct thread *th)
{
	int i = th->index;
	pid_t tid = syscall(SYS_gettid);
	if (tid != th->saved_tid)
		thread_fail(th, "gettid() %d != %d in ready", tid, th->saved_tid);
	if (tls_index != i)
		thread_fail(th, "__thread index %d != %d", tls_index, i);
	char name[16] = { 0 }, want[16];
	thread_name(i, want, sizeof(want));
	prctl(PR_GET_NAME, name, 0, 0, 0);
	if (strcmp(name, want) != 0)
		thread_fail(th, "name %s != %s", name, want);
	sigset_t cur;
	pthread_sigmask(SIG_BLOCK, NULL, &cur);
	for (int sig = 1; sig <= SIGRTMAX; sig++) {
		if (sig == 32 || sig == 33)
			continue; /* glibc's own (SIGCANCEL, SIGSETXID) */
		if (sigismember(&cur, sig) != blocks(i, sig))
			thread_fail(th, "signal %d %s", sig, blocks(i, sig) ? "no longer blocked" : "blocked");
	}
	stack_t ss;
	if (sigaltstack(NULL, &ss) != 0)
		thread_fail(th, "sigaltstack: %s", strerror(errno));
	else if (ss.ss_sp != th->altstack || ss.ss_size != ALTSTACK_SIZE || ss.ss_flags != 0)
		thread_fail(th, "sigaltstack sp %p size %zu flags %d, want %p %d 0", ss.ss_sp, ss.ss_size, ss.ss_flags, th->altstack, ALTSTACK_SIZE);
	tls_handler_sp = 0;
	pthread_kill(pthread_self(), SIGUSR1);
	char *sp = (char *)tls_handler_sp;
	if (!sp)
		thread_fail(th, "SIGUSR1 sent to itself was not handled");
	else if (sp < (char *)th->altstack || sp >= (char *)th->altstack + ALTSTACK_SIZE)
		thread_fail(th, "SIGUSR1 handler ran at %p, off its alternate stack %p", sp, th->altstack);
}

static void *run(void *arg)
{
	struct thread *th = arg;
	int i = th->index;
	tls_index = i;
	th->tid = syscall(SYS_gettid);
	char name[16];
	thread_name(i, name, sizeof(name));
	if (pthread_setname_np(pthread_self(), name) != 0)
		wl_die("pthread_setname_np");
	sigset_t mask;
	sigemptyset(&mask);
	for (int sig = 1; sig <= SIGRTMAX; sig++)
		if (sig != 32 && sig != 33 && blocks(i, sig))
			sigaddset(&mask, sig);
	if (pthread_sigmask(SIG_SETMASK, &mask, NULL) != 0)
		wl_die("pthread_sigmask");
	stack_t ss = { .ss_sp = th->altstack, .ss_size = ALTSTACK_SIZE, .ss_flags = 0 };
	if (sigaltstack(&ss, NULL) != 0)
		wl_die("sigaltstack");
	atomic_fetch_add(&started, 1);
	int checked = 0;
	while (atomic_load(&phase) != STOP) {
		th->counter++;
		if ((th->counter & 255) == 0)
			wl_sleep_ms(1);
		if (!checked && atomic_load(&phase) == CHECK) {
			check_self(th);
			checked = 1;
			atomic_store(&th->checked, 1);
		}
	}
	return NULL;
}

static void snapshot(unsigned long *c)
{
	for (int i = 0; i < nthreads; i++)
		c[i] = threads[i].counter;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc > 2)
		nthreads = atoi(argv[2]);
	if (nthreads < 1 || nthreads > MAX_THREADS) {
		fprintf(stderr, "threads: N must be 1..%d\n", MAX_THREADS);
		return 2;
	}
	struct sigaction sa = { .sa_handler = on_usr1, .sa_flags = SA_ONSTACK };
	if (sigaction(SIGUSR1, &sa, NULL) != 0)
		wl_die("sigaction");
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 256 << 10);
	for (int i = 0; i < nthreads; i++) {
		threads[i].index = i;
		threads[i].altstack = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (threads[i].altstack == MAP_FAILED)
			wl_die("mmap altstack");
		if (pthread_create(&threads[i].handle, &attr, run, &threads[i]) != 0)
			wl_die("pthread_create");
	}
	while (atomic_load(&started) < nthreads)
		wl_sleep_ms(1);
	wl_sleep_ms(50);

	static unsigned long c0[MAX_THREADS], c1[MAX_THREADS], c2[MAX_THREADS];
	static char ready[MAX_THREADS * 48 + 64];
	size_t len = snprintf(ready, sizeof(ready), "pid %d\nthreads %d\n", getpid(), nthreads);
	snapshot(c0);
	for (int i = 0; i < nthreads; i++)
		len += snprintf(ready + len, sizeof(ready) - len, "thread%d %d %lu\n", i, threads[i].tid, c0[i]);
	wl_write_file("ready", ready, len);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (getpid() != (pid_t)wl_saved_num("pid"))
		wl_fail("getpid() %d != %llu", getpid(), wl_saved_num("pid"));
	if (syscall(SYS_gettid) != getpid())
		wl_fail("the main thread's TID %ld != PID %d", syscall(SYS_gettid), getpid());
	for (int i = 0; i < nthreads; i++) {
		char key[32];
		snprintf(key, sizeof(key), "thread%d", i);
		const char *v = wl_saved(key);
		threads[i].saved_tid = v ? atoi(v) : -1;
	}
	atomic_store(&phase, CHECK);
	double deadline = wl_now() + 20;
	for (int i = 0; i < nthreads; i++)
		while (!atomic_load(&threads[i].checked) && wl_now() < deadline)
			wl_sleep_ms(1);
	snapshot(c1);
	wl_sleep_ms(300);
	snapshot(c2);
	for (int i = 0; i < nthreads; i++) {
		char key[32];
		snprintf(key, sizeof(key), "thread%d", i);
		const char *v = wl_saved(key);
		unsigned long tid = 0, saved = 0;
		if (!v || sscanf(v, "%lu %lu", &tid, &saved) != 2) {
			wl_fail("no %s in ready", key);
			continue;
		}
		if (!atomic_load(&threads[i].checked))
			wl_fail("thread %d (TID %lu) did not check itself within 20 s: it does not run", i, tid);
		if (threads[i].failure[0])
			wl_fail("thread %d (TID %lu): %s", i, tid, threads[i].failure);
		if (c1[i] < saved)
			wl_fail("thread %d counter %lu went back from %lu", i, c1[i], saved);
		if (c2[i] <= c1[i])
			wl_fail("thread %d counter stuck at %lu", i, c2[i]);
	}
	atomic_store(&phase, STOP);
	for (int i = 0; i < nthreads; i++)
		pthread_join(threads[i].handle, NULL);
	return wl_finish();
}
