#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <linux/seccomp.h>
#include <linux/filter.h>

static void copy(const char *src, const char *dst) {
	char buf[1 << 16];
	int in = open(src, O_RDONLY);
	if (in < 0) { perror(src); exit(1); }
	int o = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0) write(o, buf, n);
	close(in); close(o);
}

int main(int argc, char **argv) {
	char src[128], dst[512];
	const char *out = argv[1];
	/* a traced, stopped child */
	pid_t c = fork();
	if (c == 0) {
		ptrace(PTRACE_TRACEME, 0, 0, 0);
		raise(SIGSTOP);
		_exit(0);
	}
	int st; waitpid(c, &st, 0);
	snprintf(src, sizeof src, "/proc/%d/status", c); snprintf(dst, sizeof dst, "%s/status-traced", out); copy(src, dst);
	snprintf(src, sizeof src, "/proc/%d/stat", c); snprintf(dst, sizeof dst, "%s/stat-traced", out); copy(src, dst);
	kill(c, SIGKILL); waitpid(c, &st, 0);
	/* a zombie that exited with code 7 */
	c = fork();
	if (c == 0) _exit(7);
	usleep(100000);
	snprintf(src, sizeof src, "/proc/%d/status", c); snprintf(dst, sizeof dst, "%s/status-zombie", out); copy(src, dst);
	snprintf(src, sizeof src, "/proc/%d/stat", c); snprintf(dst, sizeof dst, "%s/stat-zombie", out); copy(src, dst);
	snprintf(src, sizeof src, "/proc/%d/maps", c); snprintf(dst, sizeof dst, "%s/maps-zombie", out); copy(src, dst);
	waitpid(c, &st, 0);
	/* seccomp filter mode with no_new_privs */
	snprintf(dst, sizeof dst, "%s/status-seccomp", out);
	int o = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	int in = open("/proc/self/status", O_RDONLY);
	struct sock_filter f[] = { BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW) };
	struct sock_fprog prog = { 1, f };
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog)) perror("seccomp");
	char buf[8192]; ssize_t n;
	while ((n = read(in, buf, sizeof buf)) > 0) write(o, buf, n);
	close(o);
	/* strict mode: only read/write/exit remain */
	snprintf(dst, sizeof dst, "%s/status-seccomp-strict", out);
	o = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	lseek(in, 0, SEEK_SET);
	prctl(PR_SET_SECCOMP, SECCOMP_MODE_STRICT);
	while ((n = read(in, buf, sizeof buf)) > 0) write(o, buf, n);
	syscall(SYS_exit, 0);
}
