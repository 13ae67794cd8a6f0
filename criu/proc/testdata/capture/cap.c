#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/personality.h>

static const char *out;

static void copy(const char *src, const char *name) {
	char buf[1 << 16], dst[512];
	snprintf(dst, sizeof dst, "%s/%s", out, name);
	int in = open(src, O_RDONLY);
	if (in < 0) { perror(src); exit(1); }
	int o = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0) write(o, buf, n);
	close(in); close(o);
}

static pthread_barrier_t b1, b2;
static pid_t thread_tid;
static void *thr(void *a) {
	sigset_t s; sigemptyset(&s); sigaddset(&s, SIGUSR2); sigaddset(&s, SIGRTMIN+3);
	pthread_sigmask(SIG_BLOCK, &s, NULL);
	thread_tid = syscall(SYS_gettid);
	syscall(SYS_tgkill, getpid(), thread_tid, SIGUSR2); /* pending on the thread only */
	pthread_barrier_wait(&b1);
	pthread_barrier_wait(&b2);
	return NULL;
}
static void h(int s) {}

int main(int argc, char **argv) {
	out = argv[1];
	char p[512];
	/* a file with spaces and a newline-free odd name, mapped then deleted */
	snprintf(p, sizeof p, "%s/.tmp deleted file", out);
	int fd = open(p, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ftruncate(fd, 8192);
	void *m1 = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096 * 0);
	unlink(p);
	*(int *)m1 = 1;
	/* shared anonymous memory shows up as /dev/zero (deleted) */
	void *m2 = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	*(int *)m2 = 2;
	/* named anonymous memory */
	void *m3 = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, m3, 3 * 4096, "ctcr test area");
	/* memfd */
	int mfd = memfd_create("ctcr memfd", 0);
	ftruncate(mfd, 4096);
	mmap(NULL, 4096, PROT_READ, MAP_SHARED, mfd, 0);
	/* PROT_NONE guard and an executable anon mapping */
	mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	mmap(NULL, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	int efd = eventfd(42, EFD_NONBLOCK | EFD_CLOEXEC);
	int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec its = {{1, 500}, {100, 0}};
	timerfd_settime(tfd, 0, &its, NULL);
	int ifd = inotify_init1(IN_NONBLOCK);
	inotify_add_watch(ifd, "/tmp", IN_CREATE | IN_DELETE);
	sigset_t ss; sigemptyset(&ss); sigaddset(&ss, SIGUSR1); sigaddset(&ss, SIGTERM);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	kill(getpid(), SIGUSR1); /* process-wide pending */
	int sfd = signalfd(-1, &ss, SFD_NONBLOCK);
	int epfd = epoll_create1(0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = 0x1234};
	epoll_ctl(epfd, EPOLL_CTL_ADD, efd, &ev);
	snprintf(p, sizeof p, "%s/.tmp regular", out);
	int rfd = open(p, O_RDWR | O_CREAT | O_APPEND, 0600);
	write(rfd, "hello world\n", 12);
	lseek(rfd, 5, SEEK_SET);
	int pfd[2]; pipe2(pfd, O_NONBLOCK);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, h);
	struct rlimit rl = {1000, 2000};
	setrlimit(RLIMIT_NOFILE, &rl);
	struct rlimit rl2 = {12345, RLIM_INFINITY};
	setrlimit(RLIMIT_STACK, &rl2);
	umask(027);
	personality(ADDR_NO_RANDOMIZE | READ_IMPLIES_EXEC);

	pthread_barrier_init(&b1, NULL, 2);
	pthread_barrier_init(&b2, NULL, 2);
	pthread_t t; pthread_create(&t, NULL, thr, NULL);
	pthread_barrier_wait(&b1);

	/* comm with spaces and parentheses: stat must split at the last ')' */
	prctl(PR_SET_NAME, "a) b (c) d)", 0, 0, 0);

	copy("/proc/self/maps", "maps-capture");
	copy("/proc/self/status", "status-capture");
	copy("/proc/self/stat", "stat-capture");
	copy("/proc/self/limits", "limits-capture");
	copy("/proc/self/auxv", "auxv-capture");
	copy("/proc/self/personality", "personality-capture");
	char src[128];
	snprintf(src, sizeof src, "/proc/self/task/%d/status", thread_tid); copy(src, "status-capture-thread");
	snprintf(src, sizeof src, "/proc/self/task/%d/stat", thread_tid); copy(src, "stat-capture-thread");
	struct { int fd; const char *n; } fds[] = {
		{efd, "eventfd"}, {tfd, "timerfd"}, {ifd, "inotify"}, {sfd, "signalfd"},
		{epfd, "epoll"}, {rfd, "regular"}, {pfd[0], "pipe"}, {mfd, "memfd"}, {0, "stdin"},
	};
	for (unsigned i = 0; i < sizeof fds / sizeof fds[0]; i++) {
		char n[64];
		snprintf(src, sizeof src, "/proc/self/fdinfo/%d", fds[i].fd);
		snprintf(n, sizeof n, "fdinfo-%s", fds[i].n);
		copy(src, n);
	}
	printf("pid %d tid %d m1 %p m2 %p m3 %p\n", getpid(), thread_tid, m1, m2, m3);
	pthread_barrier_wait(&b2);
	pthread_join(t, NULL);
	snprintf(p, sizeof p, "%s/.tmp regular", out);
	unlink(p);
	return 0;
}
