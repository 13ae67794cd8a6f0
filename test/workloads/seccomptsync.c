/*
 * seccomptsync: a seccomp filter installed with SECCOMP_FILTER_FLAG_TSYNC
 * across a tree.
 *
 *   main thread  makes workers W1 and W2, then installs filter F
 *                (getpriority fails with EPERM) with TSYNC: all three
 *                threads share it; then forks child C, which inherits it
 *                and adds G (getppid fails with ESRCH) with TSYNC too
 *
 * After restore every thread of the workload has exactly F, in mode 2
 * with one filter, and getpriority fails there with EPERM; C has F and
 * G (two filters) and reports through its exit status. A restored
 * thread must still be able to add a filter with TSYNC, which the
 * kernel refuses (returning the id of the thread in the way) unless
 * every thread's filter is an ancestor of the caller's: the threads'
 * filter must be one object, as it was, not copies. The workers, alive
 * meanwhile, must then be under the new filter too (getpgid: EPERM).
 */
#include "workload.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static long install(long nr, int err, unsigned flags)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

static long status_line(const char *key)
{
	char buf[8192];
	int fd = open("/proc/thread-self/status", O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	char *p = strstr(buf, key);
	return p ? atol(p + strlen(key)) : -1;
}

/* check_self fails unless the calling thread has n filters, F first. */
static int check_self(const char *who, int n)
{
	int ok = 1;
	if (status_line("Seccomp:\t") != 2 || status_line("Seccomp_filters:\t") != n) {
		wl_fail("%s: seccomp mode %ld with %ld filters, want 2 with %d", who, status_line("Seccomp:\t"),
			status_line("Seccomp_filters:\t"), n);
		ok = 0;
	}
	errno = 0;
	if (getpriority(PRIO_PROCESS, 0) != -1 || errno != EPERM) {
		wl_fail("%s: getpriority: errno %d, want EPERM", who, errno);
		ok = 0;
	}
	return ok;
}

static volatile int check_w, synced;
static volatile int w_done[2], w_ok[2], w_synced[2];

static void *worker(void *arg)
{
	int i = (int)(long)arg;
	while (!check_w)
		wl_sleep_ms(5);
	char who[32];
	snprintf(who, sizeof(who), "worker %d", i + 1);
	w_ok[i] = check_self(who, 1);
	w_done[i] = 1;
	/* Alive while the main thread synchronises a new filter. */
	while (!synced)
		wl_sleep_ms(5);
	errno = 0;
	if (syscall(SYS_getpgid, 0) != -1 || errno != EPERM)
		wl_fail("%s: getpgid after the new TSYNC filter: errno %d, want EPERM", who, errno);
	w_synced[i] = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pthread_t th[2];
	for (long i = 0; i < 2; i++)
		if (pthread_create(&th[i], NULL, worker, (void *)i))
			wl_die("pthread_create");
	if (install(SYS_getpriority, EPERM, SECCOMP_FILTER_FLAG_TSYNC) != 0)
		wl_die("seccomp TSYNC");
	pid_t c = fork();
	if (c < 0)
		wl_die("fork");
	if (c == 0) {
		if (install(SYS_getppid, ESRCH, SECCOMP_FILTER_FLAG_TSYNC) != 0)
			_exit(4);
		while (!wl_check_requested())
			wl_sleep_ms(10);
		int ok = check_self("child", 2);
		errno = 0;
		if (syscall(SYS_getppid) != -1 || errno != ESRCH) {
			wl_fail("child: getppid: errno %d, want ESRCH", errno);
			ok = 0;
		}
		_exit(ok ? 0 : 1);
	}
	wl_ready("child=%d\n", c);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	check_self("main thread", 1);
	check_w = 1;
	for (double end = wl_now() + 5; !(w_done[0] && w_done[1]) && wl_now() < end;)
		wl_sleep_ms(5);
	if (!w_done[0] || !w_done[1])
		wl_fail("a worker did not report");
	/* Every thread has the same chain: TSYNC must work again. */
	long r = install(SYS_getpgid, EPERM, SECCOMP_FILTER_FLAG_TSYNC);
	if (r != 0)
		wl_fail("another TSYNC filter: %ld (%s): the threads' filters differ", r, r < 0 ? strerror(errno) : "thread id");
	synced = 1;
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	int st;
	if (waitpid(c, &st, 0) != c)
		wl_fail("waitpid child: %s", strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		wl_fail("the child's checks failed (status %#x)", st);
	return wl_finish();
}
