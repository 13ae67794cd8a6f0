/*
 * manythreads DIR N: one process with N threads (the main one included)
 * for ctcr's per-task benchmark.
 *
 * N-1 threads record their TID and wait on a condition variable (a futex);
 * the main thread writes DIR/ready and polls for DIR/check. Then it wakes
 * every thread, each checks that gettid() is the TID it had, and the main
 * thread writes DIR/result PASS or FAIL and exits 0 or 1.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int go, started, bad;

static void *thread(void *arg)
{
	(void)arg;
	pid_t tid = syscall(SYS_gettid);
	pthread_mutex_lock(&mu);
	started++;
	while (!go)
		pthread_cond_wait(&cv, &mu);
	if (syscall(SYS_gettid) != tid)
		bad++;
	pthread_mutex_unlock(&mu);
	return NULL;
}

static void put(const char *dir, const char *name, const char *text)
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

int main(int argc, char **argv)
{
	int n;
	if (argc != 3 || (n = atoi(argv[2])) < 1) {
		fprintf(stderr, "usage: manythreads DIR N\n");
		return 2;
	}
	const char *dir = argv[1];
	pthread_t *ts = calloc(n, sizeof(*ts));
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (int i = 1; i < n; i++)
		if (pthread_create(&ts[i], &attr, thread, NULL) != 0) {
			perror("pthread_create");
			return 3;
		}
	struct timespec ms = { 0, 1000000 };
	for (;;) {
		pthread_mutex_lock(&mu);
		int s = started;
		pthread_mutex_unlock(&mu);
		if (s == n - 1)
			break;
		nanosleep(&ms, NULL);
	}
	char ready[64], check[4096];
	snprintf(ready, sizeof(ready), "pid %d\ntasks %d\n", getpid(), n);
	put(dir, "ready", ready);
	snprintf(check, sizeof(check), "%s/check", dir);
	struct timespec tick = { 0, 10000000 };
	while (access(check, F_OK) != 0)
		nanosleep(&tick, NULL);
	pthread_mutex_lock(&mu);
	go = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&mu);
	for (int i = 1; i < n; i++)
		pthread_join(ts[i], NULL);
	put(dir, "result", bad ? "FAIL: a thread changed its TID\n" : "PASS\n");
	return bad != 0;
}
