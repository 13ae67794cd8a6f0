/*
 * seccomp: seccomp filters, per thread.
 *
 *   worker thread W: made first, no filter
 *   main thread:     filter F1 (getpriority fails with EPERM), then
 *                    filter F2 (getppid fails with ESRCH), installed
 *                    without no_new_privs (the workload runs as root)
 *
 * After restore the main thread still has both filters, in mode 2 with
 * 2 filters as /proc shows it, and W has none: getpriority works there.
 */
#include "workload.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>

static void deny(long nr, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, nr, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | err),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
		wl_die("seccomp");
}

/* status_line returns the value of key in /proc/thread-self/status. */
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

static volatile int check_w, w_done;
static volatile long w_prio_errno = -2, w_mode = -2;

static void *worker(void *arg)
{
	(void)arg;
	while (!check_w)
		wl_sleep_ms(5);
	errno = 0;
	long r = getpriority(PRIO_PROCESS, 0);
	w_prio_errno = (r == -1) ? errno : 0;
	w_mode = status_line("Seccomp:\t");
	w_done = 1;
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pthread_t th;
	if (pthread_create(&th, NULL, worker, NULL))
		wl_die("pthread_create");
	deny(SYS_getpriority, EPERM);
	deny(SYS_getppid, ESRCH);

	wl_ready("mode %ld\nfilters %ld\n", status_line("Seccomp:\t"), status_line("Seccomp_filters:\t"));
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (status_line("Seccomp:\t") != 2 || status_line("Seccomp_filters:\t") != 2)
		wl_fail("the main thread is in seccomp mode %ld with %ld filters, want 2 with 2", status_line("Seccomp:\t"),
			status_line("Seccomp_filters:\t"));
	errno = 0;
	if (getpriority(PRIO_PROCESS, 0) != -1 || errno != EPERM)
		wl_fail("getpriority in the main thread: errno %d, want EPERM (filter F1)", errno);
	errno = 0;
	if (syscall(SYS_getppid) != -1 || errno != ESRCH)
		wl_fail("getppid in the main thread: errno %d, want ESRCH (filter F2)", errno);
	check_w = 1;
	for (double end = wl_now() + 5; !w_done && wl_now() < end;)
		wl_sleep_ms(5);
	if (w_prio_errno != 0 || w_mode != 0)
		wl_fail("the worker thread: getpriority errno %ld, seccomp mode %ld; want 0 and 0 (no filter)", w_prio_errno, w_mode);
	return wl_finish();
}
