/*
 * zombies: zombie children of a restored task, each ended differently,
 * none waited for by the workload before the dump.
 *
 *   R (the workload)
 *   +- exited   exit(42)
 *   +- killed   killed by SIGKILL (the kernel gives such a task no
 *               chance to stop on its way out, even traced)
 *   +- termed   killed by SIGTERM
 *   +- lost     setpgid(0, L) into the group of a child L that led it and
 *               exited (reaped): a zombie in a group whose leader is gone,
 *               exit(7)
 *   +- cored    abort() with RLIMIT_CORE unlimited in a directory of its
 *               own: killed by SIGABRT, and, where the machine's
 *               core_pattern writes cores into the cwd, with the
 *               core-dump flag (WCOREDUMP), which must come back too
 *
 * ready lists each zombie with its status: "child PID exit N" or "child
 * PID signal N". After restore (DIR/check) R reaps every child with
 * waitpid and compares the status and the process group of each.
 */
#include "workload.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

struct kid {
	pid_t pid;
	int sig;  /* killed by this signal, or 0 */
	int code; /* else exited with this */
	pid_t pgid;
	int core; /* with the core-dump flag */
};

static struct kid kids[5];

static pid_t spawn_exit(int code, pid_t pgid)
{
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		if (pgid && setpgid(0, pgid) < 0)
			_exit(99);
		_exit(code);
	}
	return pid;
}

static pid_t spawn_sleeper(void)
{
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		for (;;)
			pause();
	}
	return pid;
}

/* spawn_core starts a child that dumps core in DIR/cores and dies. */
static pid_t spawn_core(void)
{
	char dir[512];
	wl_path(dir, sizeof(dir), "cores");
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		wl_die("mkdir cores");
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		struct rlimit inf = { RLIM_INFINITY, RLIM_INFINITY };
		if (chdir(dir) < 0 || setrlimit(RLIMIT_CORE, &inf) < 0 || prctl(PR_SET_DUMPABLE, 1) < 0)
			_exit(98);
		abort();
	}
	return pid;
}

/* wait_zombie waits until pid is a zombie, without reaping it. */
static void wait_zombie(pid_t pid)
{
	siginfo_t si;
	for (int i = 0; i < 5000; i++) {
		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, pid, &si, WEXITED | WNOWAIT) == 0 && si.si_pid == pid)
			return;
		wl_sleep_ms(1);
	}
	errno = ETIMEDOUT;
	wl_die("wait for a zombie");
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);

	kids[0] = (struct kid){ spawn_exit(42, 0), 0, 42, getpgrp(), 0 };
	kids[1].pid = spawn_sleeper();
	kids[1].sig = SIGKILL;
	kids[1].pgid = getpgrp();
	kill(kids[1].pid, SIGKILL);
	kids[2].pid = spawn_sleeper();
	kids[2].sig = SIGTERM;
	kids[2].pgid = getpgrp();
	kill(kids[2].pid, SIGTERM);

	/* L leads a group, Z joins it, L exits and is reaped. */
	pid_t l = spawn_sleeper();
	if (setpgid(l, l) < 0)
		wl_die("setpgid L");
	kids[3] = (struct kid){ spawn_exit(7, l), 0, 7, l, 0 };
	wait_zombie(kids[3].pid);
	kill(l, SIGKILL);
	if (waitpid(l, NULL, 0) != l)
		wl_die("reap L");

	kids[4] = (struct kid){ spawn_core(), SIGABRT, 0, getpgrp(), 0 };
	wait_zombie(kids[4].pid);
	siginfo_t si = { 0 };
	if (waitid(P_PID, kids[4].pid, &si, WEXITED | WNOWAIT) < 0)
		wl_die("waitid cored");
	kids[4].core = si.si_code == CLD_DUMPED;

	char buf[1024];
	int n = 0;
	for (int i = 0; i < 5; i++) {
		wait_zombie(kids[i].pid);
		n += snprintf(buf + n, sizeof(buf) - n, "child %d %s %d pgid %d\n", kids[i].pid,
			      kids[i].sig ? "signal" : "exit", kids[i].sig ? kids[i].sig : kids[i].code, kids[i].pgid);
	}
	/* The pgid of a zombie is still in /proc. */
	for (int i = 0; i < 5; i++) {
		pid_t g = getpgid(kids[i].pid);
		if (g != kids[i].pgid)
			wl_fail("before the dump: child %d is in group %d, want %d", kids[i].pid, g, kids[i].pgid);
	}
	wl_ready("%s", buf);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	for (int i = 0; i < 5; i++) {
		struct kid *k = &kids[i];
		pid_t g = getpgid(k->pid);
		if (g != k->pgid)
			wl_fail("zombie %d is in process group %d, want %d", k->pid, g, k->pgid);
		int st;
		pid_t r = waitpid(k->pid, &st, WNOHANG);
		if (r != k->pid) {
			wl_fail("waitpid(%d) = %d (%s), want the zombie", k->pid, r, r < 0 ? strerror(errno) : "still running");
			continue;
		}
		if (k->sig && !(WIFSIGNALED(st) && WTERMSIG(st) == k->sig))
			wl_fail("zombie %d: status %#x, want killed by signal %d", k->pid, st, k->sig);
		if (k->sig && !WCOREDUMP(st) != !k->core)
			wl_fail("zombie %d: status %#x, want the core-dump flag %s", k->pid, st, k->core ? "set" : "clear");
		if (!k->sig && !(WIFEXITED(st) && WEXITSTATUS(st) == k->code))
			wl_fail("zombie %d: status %#x, want exit %d", k->pid, st, k->code);
	}
	if (waitpid(-1, NULL, WNOHANG) != -1 || errno != ECHILD)
		wl_fail("a child is left that the workload did not have");
	return wl_finish();
}
