/*
 * cgtree [main=D1,D2,...] [child=D,...] [thread=D,...] [idle=N]: a
 * process, its child and a second thread of the process, each moved by
 * itself into the cgroup directories given for it (absolute paths of
 * cgroup dirs; none: they stay where they were started); with idle=N,
 * N more threads that stay in main's cgroups and sleep.
 *
 *   main   writes its PID into each D/cgroup.procs, then forks the child
 *          and starts the thread (both are born in its cgroups);
 *   child  writes its PID into each of its D/cgroup.procs;
 *   thread writes its TID into each of its D/tasks (v1) or
 *          D/cgroup.threads (v2, a threaded cgroup below main's).
 *
 * Each task then keeps /proc/thread-self/cgroup as it read it, and 4 MiB
 * of memory it filled. DIR/ready holds "pid P", "child C", "tid T".
 * After restore (DIR/check) each task checks that it is in the same
 * cgroups (the file reads the same) and its memory is intact; the thread
 * and the child report to the main thread, which writes DIR/result.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define MEM (4 << 20)

static char *arg_main, *arg_child, *arg_thread;
static int arg_idle;

static void *idle_main(void *arg)
{
	(void)arg;
	for (;;)
		wl_sleep_ms(100);
	return NULL;
}

/* place writes id into the file named by kind in each dir of the comma-separated list. */
static void place(char *list, long id, int thread)
{
	if (!list || !*list)
		return;
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", list);
	for (char *save = NULL, *d = strtok_r(buf, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
		char path[4200];
		const char *file = "cgroup.procs";
		if (thread) {
			snprintf(path, sizeof(path), "%s/tasks", d);
			file = access(path, F_OK) == 0 ? "tasks" : "cgroup.threads";
		}
		snprintf(path, sizeof(path), "%s/%s", d, file);
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			wl_die(path);
		char num[32];
		int n = snprintf(num, sizeof(num), "%ld\n", id);
		if (write(fd, num, n) != n)
			wl_die(path);
		close(fd);
	}
}

static void read_cgroup(char *buf, size_t cap)
{
	int fd = open("/proc/thread-self/cgroup", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		wl_die("/proc/thread-self/cgroup");
	size_t off = 0;
	for (;;) {
		ssize_t n = read(fd, buf + off, cap - 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += n;
	}
	buf[off] = 0;
	close(fd);
}

/* task_state is what each task keeps and checks. */
struct task_state {
	char cgroup[4096];
	unsigned char *mem;
	unsigned char seed;
};

static void keep(struct task_state *s, unsigned char seed)
{
	read_cgroup(s->cgroup, sizeof(s->cgroup));
	s->seed = seed;
	s->mem = malloc(MEM);
	if (!s->mem)
		wl_die("malloc");
	for (size_t i = 0; i < MEM; i++)
		s->mem[i] = (unsigned char)(i * 7 + seed);
}

/* verify returns NULL or what differed. */
static const char *verify(struct task_state *s, char *why, size_t cap)
{
	char now[4096];
	read_cgroup(now, sizeof(now));
	if (strcmp(now, s->cgroup) != 0) {
		snprintf(why, cap, "cgroups were\n%s\nnow\n%s", s->cgroup, now);
		for (char *p = why; *p; p++)
			if (*p == '\n')
				*p = ' ';
		return why;
	}
	for (size_t i = 0; i < MEM; i++)
		if (s->mem[i] != (unsigned char)(i * 7 + s->seed)) {
			snprintf(why, cap, "memory differs at %zu", i);
			return why;
		}
	return NULL;
}

static struct task_state main_state, thread_state;
static atomic_int thread_ready, thread_done;
static char thread_failure[9000];
static volatile pid_t thread_tid;

static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = syscall(SYS_gettid);
	place(arg_thread, thread_tid, 1);
	keep(&thread_state, 0x55);
	atomic_store(&thread_ready, 1);
	while (!wl_check_requested())
		wl_sleep_ms(5);
	const char *why = verify(&thread_state, thread_failure, sizeof(thread_failure));
	if (!why)
		thread_failure[0] = 0;
	atomic_store(&thread_done, 1);
	return NULL;
}

static int child_main(pid_t parent)
{
	struct task_state st;
	place(arg_child, getpid(), 0);
	keep(&st, 0x33);
	char marker[64];
	snprintf(marker, sizeof(marker), "child-ready");
	wl_write_file(marker, "", 0);
	while (!wl_check_requested()) {
		if (getppid() != parent)
			return 2; /* the parent died: do not outlive it in the test's cgroups */
		wl_sleep_ms(5);
	}
	char why[9000];
	const char *w = verify(&st, why, sizeof(why));
	wl_write_file("child-result", w ? w : "PASS", strlen(w ? w : "PASS"));
	return w ? 1 : 0;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	for (int i = 2; i < argc; i++) {
		if (strncmp(argv[i], "main=", 5) == 0)
			arg_main = argv[i] + 5;
		else if (strncmp(argv[i], "child=", 6) == 0)
			arg_child = argv[i] + 6;
		else if (strncmp(argv[i], "thread=", 7) == 0)
			arg_thread = argv[i] + 7;
		else if (strncmp(argv[i], "idle=", 5) == 0)
			arg_idle = atoi(argv[i] + 5);
		else {
			fprintf(stderr, "cgtree: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	place(arg_main, getpid(), 0);
	keep(&main_state, 0x11);
	pid_t self = getpid();
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0)
		_exit(child_main(self));
	pthread_t th;
	if (pthread_create(&th, NULL, thread_main, NULL))
		wl_die("pthread_create");
	for (int i = 0; i < arg_idle; i++) {
		pthread_t idle;
		if (pthread_create(&idle, NULL, idle_main, NULL))
			wl_die("pthread_create");
	}
	char path[4096];
	wl_path(path, sizeof(path), "child-ready");
	for (int i = 0; !atomic_load(&thread_ready) || access(path, F_OK) != 0; i++) {
		if (i > 20000)
			wl_die("child or thread not ready");
		wl_sleep_ms(1);
	}
	wl_ready("pid %d\nchild %d\ntid %d\n", getpid(), child, thread_tid);

	while (!wl_check_requested())
		wl_sleep_ms(5);
	char why[9000];
	const char *w = verify(&main_state, why, sizeof(why));
	if (w)
		wl_fail("main thread: %s", w);
	pthread_join(th, NULL);
	if (thread_failure[0])
		wl_fail("thread: %s", thread_failure);
	int status = 0;
	for (int i = 0;; i++) {
		pid_t r = waitpid(child, &status, WNOHANG);
		if (r == child)
			break;
		if (r < 0 || i > 10000) {
			wl_fail("child %d did not end: %s", child, r < 0 ? strerror(errno) : "timeout");
			break;
		}
		wl_sleep_ms(1);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		char res[8192];
		if (wl_read_file("child-result", res, sizeof(res)) < 0)
			snprintf(res, sizeof(res), "no child-result");
		wl_fail("child: status %#x: %s", status, res);
	}
	return wl_finish();
}
