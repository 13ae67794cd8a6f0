/*
 * sigio: files in O_ASYNC mode, each with its SIGIO owner and signal
 * (which live in the open file, not in the task):
 *   a pipe, owner this process (F_SETOWN), signal SIGRTMIN+1 (F_SETSIG:
 *     queued with si_fd);
 *   a socketpair end, owner this process's group (F_SETOWN_EX
 *     F_OWNER_PGRP), plain SIGIO;
 *   a second pipe, owner a thread of this process (F_OWNER_TID), signal
 *     SIGRTMIN+2, which that thread counts.
 * The check verifies the owners, signals and O_ASYNC flags, then writes
 * into each file and waits for its signal, where it belongs.
 *
 * With "outside", one more pipe is owned by the parent, outside the
 * tree: a dump must refuse it, naming the owner.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static volatile sig_atomic_t rt1_count, rt1_fd = -1, io_count, rt2_count, rt2_tid;

static void on_rt1(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)uc;
	rt1_count++;
	rt1_fd = si->si_fd;
}

static void on_io(int sig)
{
	(void)sig;
	io_count++;
}

static void on_rt2(int sig)
{
	(void)sig;
	/* The tid first: main reads it as soon as it sees the count move,
	 * from the other core. */
	rt2_tid = (sig_atomic_t)syscall(SYS_gettid);
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	rt2_count++;
}

static volatile pid_t thread_tid;

static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static void set_async(int fd, int type, pid_t owner, int sig)
{
	struct f_owner_ex ex = { .type = type, .pid = owner };
	if (fcntl(fd, F_SETOWN_EX, &ex) < 0 || fcntl(fd, F_SETSIG, sig) < 0 ||
	    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_ASYNC | O_NONBLOCK) < 0)
		wl_die("set O_ASYNC");
}

static void check_async(const char *what, int fd, int type, pid_t owner, int sig)
{
	struct f_owner_ex ex;
	if (fcntl(fd, F_GETOWN_EX, &ex) < 0)
		wl_die("F_GETOWN_EX");
	int got = fcntl(fd, F_GETSIG);
	int fl = fcntl(fd, F_GETFL);
	if ((int)ex.type != type || ex.pid != owner || got != sig || !(fl & O_ASYNC))
		wl_fail("%s: owner type %d id %d, signal %d, O_ASYNC %d; want type %d id %d, signal %d, O_ASYNC", what,
			ex.type, ex.pid, got, !!(fl & O_ASYNC), type, owner, sig);
}

/* wait_for waits up to 2 s for *count to pass before. */
static int wait_for(volatile sig_atomic_t *count, int before)
{
	for (int i = 0; i < 2000 && *count == before; i++)
		wl_sleep_ms(1);
	return *count != before;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	struct sigaction sa = { 0 };
	sa.sa_sigaction = on_rt1;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN + 1, &sa, NULL);
	signal(SIGIO, on_io);
	signal(SIGRTMIN + 2, on_rt2);
	/* Only the thread takes SIGRTMIN+2. */
	sigset_t rt2;
	sigemptyset(&rt2);
	sigaddset(&rt2, SIGRTMIN + 2);
	pthread_t th;
	if (pthread_create(&th, NULL, thread_main, NULL) != 0)
		wl_die("pthread_create");
	pthread_sigmask(SIG_BLOCK, &rt2, NULL);
	while (thread_tid == 0)
		wl_sleep_ms(1);

	int p1[2], p2[2], sv[2];
	if (pipe(p1) < 0 || pipe(p2) < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		wl_die("pipe/socketpair");
	set_async(p1[0], F_OWNER_PID, getpid(), SIGRTMIN + 1);
	set_async(sv[0], F_OWNER_PGRP, getpgrp(), 0);
	set_async(p2[0], F_OWNER_TID, thread_tid, SIGRTMIN + 2);
	if (argc > 2 && strcmp(argv[2], "outside") == 0) {
		int p3[2];
		if (pipe(p3) < 0)
			wl_die("pipe");
		set_async(p3[0], F_OWNER_PID, getppid(), 0);
	}
	wl_ready("pid %d\nthread %d\n", getpid(), (int)thread_tid);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	check_async("pipe owned by the process", p1[0], F_OWNER_PID, getpid(), SIGRTMIN + 1);
	check_async("socket owned by the group", sv[0], F_OWNER_PGRP, getpgrp(), 0);
	check_async("pipe owned by the thread", p2[0], F_OWNER_TID, thread_tid, SIGRTMIN + 2);
	int before = rt1_count;
	if (write(p1[1], "x", 1) != 1)
		wl_die("write p1");
	if (!wait_for(&rt1_count, before))
		wl_fail("no SIGRTMIN+1 after a write into the pipe owned by the process");
	else if (rt1_fd != p1[0])
		wl_fail("SIGRTMIN+1 came with si_fd %d, want %d", (int)rt1_fd, p1[0]);
	before = io_count;
	if (write(sv[1], "y", 1) != 1)
		wl_die("write sv");
	if (!wait_for(&io_count, before))
		wl_fail("no SIGIO after a write into the socket owned by the group");
	before = rt2_count;
	if (write(p2[1], "z", 1) != 1)
		wl_die("write p2");
	if (!wait_for(&rt2_count, before))
		wl_fail("no SIGRTMIN+2 after a write into the pipe owned by the thread");
	else if (rt2_tid != thread_tid)
		wl_fail("SIGRTMIN+2 went to thread %d, want %d", (int)rt2_tid, (int)thread_tid);
	wl_printf("signals: %d rt1, %d io, %d rt2\n", (int)rt1_count, (int)io_count, (int)rt2_count);
	return wl_finish();
}
