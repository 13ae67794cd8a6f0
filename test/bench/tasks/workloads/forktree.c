/*
 * forktree DIR N: a tree of N processes for ctcr's per-task benchmark.
 *
 * Process i (the root is 0) forks processes 10i+1 .. 10i+10 below N, then
 * blocks SIGUSR1 and waits for it in sigsuspend. Every process writes
 * DIR/born/i once it and its children exist; the root then writes
 * DIR/ready. On SIGUSR1 (sent to the whole process group) each process
 * checks that getpid() is the PID it had, reaps its children, each of
 * which must exit 0, and exits 0, or 1 on a difference; the root writes
 * DIR/result PASS or FAIL.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *dir;
static int n, idx;
static pid_t my_pid;
static volatile sig_atomic_t woken;

static void on_usr1(int sig)
{
	(void)sig;
	woken = 1;
}

static void put(const char *name, const char *text)
{
	char tmp[4096], dst[4096];
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
	snprintf(dst, sizeof(dst), "%s/%s", dir, name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) != 0 || rename(tmp, dst) != 0) {
		perror(dst);
		exit(3);
	}
}

static void wait_born(int i)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/born/%d", dir, i);
	struct timespec ts = { 0, 1000000 };
	for (int tries = 0; access(path, F_OK) != 0; tries++) {
		if (tries > 120000) {
			fprintf(stderr, "forktree: %s did not appear\n", path);
			exit(3);
		}
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv)
{
	if (argc != 3 || (n = atoi(argv[2])) < 1) {
		fprintf(stderr, "usage: forktree DIR N\n");
		return 2;
	}
	dir = argv[1];
	char path[4096];
	snprintf(path, sizeof(path), "%s/born", dir);
	if (mkdir(path, 0755) != 0) {
		perror(path);
		return 3;
	}
	sigset_t usr1, none;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigemptyset(&none);
	sigprocmask(SIG_BLOCK, &usr1, NULL);
	signal(SIGUSR1, on_usr1);

	for (int k = 1; k <= 10; k++) {
		int c = 10 * idx + k;
		if (c >= n)
			break;
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			exit(3);
		}
		if (pid == 0) {
			idx = c;
			k = 0; /* the child forks its own children */
		}
	}
	my_pid = getpid();
	for (int k = 1; k <= 10 && 10 * idx + k < n; k++)
		wait_born(10 * idx + k);
	char name[64];
	snprintf(name, sizeof(name), "born/%d", idx);
	put(name, "");
	if (idx == 0) {
		char ready[64];
		snprintf(ready, sizeof(ready), "pid %d\ntasks %d\n", my_pid, n);
		put("ready", ready);
	}

	while (!woken)
		sigsuspend(&none);
	int bad = getpid() != my_pid;
	for (;;) {
		int st;
		pid_t p = wait(&st);
		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0)
			break;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			bad = 1;
	}
	if (idx == 0)
		put("result", bad ? "FAIL: a process changed its PID or failed\n" : "PASS\n");
	return bad;
}
