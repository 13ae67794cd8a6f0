/*
 * tree: a tree of 100 processes in several sessions and process groups,
 * with zombies, orphans, and a session and a group whose leaders are gone.
 *
 *   R (root, session and group leader, PR_SET_CHILD_SUBREAPER)
 *   +- Z1          zombie: exited with status 42, not reaped by R
 *   +- a           setsid(): session a with a live leader
 *   |  +- 9 leaves     in group a
 *   |  +- b            setpgid(0, 0): group b in session a, 9 leaves in it
 *   |  +- Z2           zombie killed by SIGUSR2, not reaped by a
 *   +- (d)         setsid() then exited: session d has no leader; its
 *   |              children, orphans re-parented to R (the subreaper):
 *   |  +- 3 group leaders, each setpgid(0, 0) with 5 leaves in its group
 *   |  +- 5 leaves in group d, whose leader is gone too
 *   +- (e)         setpgid(0, 0) then exited: group e has no leader; its
 *   |              10 leaves are orphans re-parented to R
 *   +- chain c0 -> c1 -> c2 -> c3 -> (c4) -> c5 -> ... -> c9
 *   |              c4 exited (reaped by c3): c5 is an orphan under R;
 *   |              c6 joins group e with setpgid(0, e), c7..c9 inherit it
 *   +- 17 pairs (a child with one leaf; every other pair its own group)
 *   +- 1 leaf
 *
 * Every process that stays alive writes DIR/born/PID once it and all its
 * descendants are set up. R then reads pid, ppid, pgid, sid and state of
 * every task from /proc into DIR/ready:
 *
 *   root PID / tasks 100 / zombie PID exit 42 / zombie PID signal 12 /
 *   dead-session-leader PID / dead-group-leader PID / dead-parent PID /
 *   task PID PPID PGID SID STATE   (one line per task, zombies included)
 *
 * After restore (DIR/check) every live process checks its own getpid,
 * getppid, getpgid and getsid against its line (R only that its parent is
 * alive: it is now ctcr's child, and that it is still a subreaper), reaps
 * its zombie child with the recorded status, reaps all its other children
 * (each must be one it had, exiting 0), writes DIR/res/PID and exits. R
 * collects every res file into DIR/result.
 */
#include "workload.h"

#include <dirent.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define ZOMBIE_STATUS 42
#define ZOMBIE_SIGNAL SIGUSR2
#define MAX_TASKS 256

static pid_t my_pid; /* getpid() at setup: memory that must survive */

/* The full tree; the small modes shrink the subtrees of d and e. */
static int groups_in_d = 3, leaves = 5;

static void born(void)
{
	char name[64];
	snprintf(name, sizeof(name), "born/%d", (int)getpid());
	wl_write_file(name, "", 0);
}

static void wait_born(pid_t pid)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/born/%d", wl_dir, (int)pid);
	for (int i = 0; access(path, F_OK) != 0; i++) {
		if (i > 60 * 1000) {
			errno = ETIMEDOUT;
			wl_die(path);
		}
		wl_sleep_ms(1);
	}
}

/* The recorded tree, parsed from DIR/ready after restore. */
struct task {
	int pid, ppid, pgid, sid;
	char state;
	int zombie;     /* 0, or 'e' (exit) / 's' (signal) */
	int zombie_val; /* exit status or signal */
};
static struct task tasks[MAX_TASKS];
static int ntasks, root;

static void load_ready(void)
{
	static char buf[1 << 16];
	if (wl_read_file("ready", buf, sizeof(buf)) < 0)
		wl_die("read ready");
	static int zpid[8], zkind[8], zval[8];
	int nz = 0;
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
		struct task tk = { 0 };
		char kind[16];
		if (sscanf(line, "task %d %d %d %d %c", &tk.pid, &tk.ppid, &tk.pgid, &tk.sid, &tk.state) == 5 && ntasks < MAX_TASKS)
			tasks[ntasks++] = tk;
		else if (nz < 8 && sscanf(line, "zombie %d %15s %d", &zpid[nz], kind, &zval[nz]) == 3)
			zkind[nz++] = kind[0];
		else
			sscanf(line, "root %d", &root);
	}
	for (int z = 0; z < nz; z++)
		for (int i = 0; i < ntasks; i++)
			if (tasks[i].pid == zpid[z]) {
				tasks[i].zombie = zkind[z];
				tasks[i].zombie_val = zval[z];
			}
}

static struct task *find_task(int pid)
{
	for (int i = 0; i < ntasks; i++)
		if (tasks[i].pid == pid)
			return &tasks[i];
	return NULL;
}

static void wait_check(void)
{
	while (!wl_check_requested())
		wl_sleep_ms(20);
}

/*
 * check_and_reap checks this process against its recorded line, reaps its
 * zombie child with the recorded status, then every other child.
 */
static void check_and_reap(void)
{
	load_ready();
	struct task *me = find_task(my_pid);
	if (!me) {
		wl_fail("PID %d (at setup) has no line in ready", my_pid);
		return;
	}
	if (getpid() != me->pid)
		wl_fail("getpid() %d != %d", getpid(), me->pid);
	if (my_pid == root) {
		pid_t pp = getppid();
		if (pp <= 0 || kill(pp, 0) != 0)
			wl_fail("getppid() %d is not a live process", pp);
		int sub = -1;
		if (prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0) != 0 || sub != 1)
			wl_fail("PR_GET_CHILD_SUBREAPER is %d, want 1", sub);
	} else if (getppid() != me->ppid)
		wl_fail("getppid() %d != %d", getppid(), me->ppid);
	if (getpgid(0) != me->pgid)
		wl_fail("getpgid() %d != %d", getpgid(0), me->pgid);
	if (getsid(0) != me->sid)
		wl_fail("getsid() %d != %d", getsid(0), me->sid);

	for (int i = 0; i < ntasks; i++) {
		struct task *z = &tasks[i];
		if (!z->zombie || z->ppid != my_pid)
			continue;
		char path[64], st[4096];
		snprintf(path, sizeof(path), "/proc/%d/stat", z->pid);
		int fd = open(path, O_RDONLY);
		ssize_t n = fd < 0 ? -1 : read(fd, st, sizeof(st) - 1);
		if (fd >= 0)
			close(fd);
		char *rp = n > 0 ? (st[n] = 0, strrchr(st, ')')) : NULL;
		if (!rp || rp[2] != 'Z')
			wl_fail("zombie %d is not a zombie: %s", z->pid, rp ? rp + 2 : "no /proc entry");
		siginfo_t si = { 0 };
		if (waitid(P_PID, z->pid, &si, WEXITED | WNOHANG) != 0) {
			wl_fail("waitid(zombie %d): %s", z->pid, strerror(errno));
			continue;
		}
		if (si.si_pid != z->pid) {
			wl_fail("zombie %d cannot be reaped at once: it did not stay dead", z->pid);
			continue;
		}
		if (z->zombie == 'e' && (si.si_code != CLD_EXITED || si.si_status != z->zombie_val))
			wl_fail("zombie %d: si_code %d si_status %d, want exited with %d", z->pid, si.si_code, si.si_status, z->zombie_val);
		if (z->zombie == 's' && (si.si_code != CLD_KILLED || si.si_status != z->zombie_val))
			wl_fail("zombie %d: si_code %d si_status %d, want killed by signal %d", z->pid, si.si_code, si.si_status, z->zombie_val);
	}
}

/* reap_children waits for every remaining child: each must be recorded as ours and exit 0. */
static void reap_children(void)
{
	for (;;) {
		int status;
		pid_t p = waitpid(-1, &status, __WALL);
		if (p < 0 && errno == EINTR)
			continue;
		if (p < 0) {
			if (errno != ECHILD)
				wl_fail("waitpid: %s", strerror(errno));
			return;
		}
		struct task *c = find_task(p);
		if (!c)
			wl_fail("reaped PID %d (status %#x), which was not in the tree: a leftover restore helper?", p, status);
		else if (c->ppid != my_pid)
			wl_fail("reaped PID %d, whose parent was %d, not %d", p, c->ppid, my_pid);
		else if (c->zombie)
			wl_fail("zombie %d could only be reaped now, with status %#x", p, status);
		else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			wl_fail("child %d ended with status %#x (see res/%d)", p, status, p);
	}
}

/* life: the rest of a process that stays alive, after it was born. */
static void __attribute__((noreturn)) life(void)
{
	born();
	wait_check();
	check_and_reap();
	reap_children();
	char name[64], res[sizeof(wl_failures) + 16];
	snprintf(name, sizeof(name), "res/%d", my_pid);
	int n = snprintf(res, sizeof(res), wl_failures[0] ? "FAIL: %s\n" : "PASS\n", wl_failures);
	wl_write_file(name, res, n);
	_exit(wl_failures[0] ? 1 : 0);
}

/* spawn forks a child that runs body; the parent gets its PID. */
static pid_t spawn(void (*body)(void))
{
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		my_pid = getpid();
		body();
		_exit(99); /* bodies do not return */
	}
	return pid;
}

static void leaf(void)
{
	life();
}

static void spawn_leaves(int n)
{
	pid_t kids[16];
	for (int i = 0; i < n; i++)
		kids[i] = spawn(leaf);
	for (int i = 0; i < n; i++)
		wait_born(kids[i]);
}

static void group_b(void)
{
	if (setpgid(0, 0) != 0)
		wl_die("setpgid b");
	spawn_leaves(9);
	life();
}

static void session_a(void)
{
	if (setsid() < 0)
		wl_die("setsid a");
	spawn_leaves(9);
	wait_born(spawn(group_b));
	pid_t z2 = fork();
	if (z2 < 0)
		wl_die("fork z2");
	if (z2 == 0) {
		signal(ZOMBIE_SIGNAL, SIG_DFL);
		raise(ZOMBIE_SIGNAL);
		_exit(98);
	}
	siginfo_t si;
	if (waitid(P_PID, z2, &si, WEXITED | WNOWAIT) != 0)
		wl_die("waitid z2");
	char v[32];
	int n = snprintf(v, sizeof(v), "%d", (int)z2);
	wl_write_file("z2pid", v, n);
	life();
}

static void group_leader_5(void)
{
	if (setpgid(0, 0) != 0)
		wl_die("setpgid d-group");
	spawn_leaves(leaves);
	life();
}

static void session_d(void)
{
	if (setsid() < 0)
		wl_die("setsid d");
	pid_t g[3];
	for (int i = 0; i < groups_in_d; i++)
		g[i] = spawn(group_leader_5);
	spawn_leaves(leaves);
	for (int i = 0; i < groups_in_d; i++)
		wait_born(g[i]);
	_exit(0); /* session d and group d lose their leader */
}

static void group_e(void)
{
	if (setpgid(0, 0) != 0)
		wl_die("setpgid e");
	spawn_leaves(2 * leaves);
	_exit(0); /* group e loses its leader */
}

static pid_t e_pid, c4_pid;
static int link_no;

static void chain_link(void)
{
	int k = link_no;
	if (k == 6 && setpgid(0, e_pid) != 0)
		wl_die("setpgid(0, e) in c6");
	if (k == 9)
		life();
	link_no = k + 1;
	pid_t next = spawn(chain_link);
	if (k == 3) {
		/* c4 exits once c5 is born: reap it, c5 goes to R. */
		int st;
		if (waitpid(next, &st, 0) != next || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			wl_die("c4 did not exit 0");
		char v[32];
		int n = snprintf(v, sizeof(v), "%d", (int)next);
		wl_write_file("c4pid", v, n);
		life();
	}
	wait_born(next);
	if (k == 4)
		_exit(0);
	life();
}

static void pair(void)
{
	if (my_pid % 2 && setpgid(0, 0) != 0)
		wl_die("setpgid pair");
	spawn_leaves(1);
	life();
}

static int read_pid_file(const char *name)
{
	char buf[32];
	if (wl_read_file(name, buf, sizeof(buf)) < 0)
		wl_die(name);
	return atoi(buf);
}

static char ready[1 << 15];
static size_t ready_len;

static void add(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(ready + ready_len, sizeof(ready) - ready_len, fmt, ap);
	va_end(ap);
	if (n < 0 || ready_len + n >= sizeof(ready)) {
		errno = EOVERFLOW;
		wl_die("ready");
	}
	ready_len += n;
}

static void add_task(int pid)
{
	char path[64], st[4096];
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		wl_die(path);
	ssize_t n = read(fd, st, sizeof(st) - 1);
	close(fd);
	if (n <= 0)
		wl_die(path);
	st[n] = 0;
	char state;
	int ppid, pgid, sid;
	char *rp = strrchr(st, ')');
	if (!rp || sscanf(rp + 2, "%c %d %d %d", &state, &ppid, &pgid, &sid) != 4) {
		errno = EINVAL;
		wl_die(path);
	}
	add("task %d %d %d %d %c\n", pid, ppid, pgid, sid, state);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char path[4096];
	wl_path(path, sizeof(path), "born");
	if (mkdir(path, 0755) != 0)
		wl_die(path);
	wl_path(path, sizeof(path), "res");
	if (mkdir(path, 0755) != 0)
		wl_die(path);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
		wl_die("PR_SET_CHILD_SUBREAPER");
	my_pid = getpid();

	const char *mode = argc > 2 ? argv[2] : "full";
	pid_t z1 = 0, z2 = 0, d = 0, kids[64];
	int nkids = 0, want, st;
	if (strcmp(mode, "dead-group") == 0) {
		leaves = 1, want = 3; /* R and the 2 members of group e */
		e_pid = spawn(group_e);
		if (waitpid(e_pid, &st, 0) != e_pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			wl_die("group leader e did not exit 0");
	} else if (strcmp(mode, "dead-session") == 0) {
		groups_in_d = 1, leaves = 1, want = 4; /* R, a group leader and its leaf, a leaf in group d */
		d = spawn(session_d);
		if (waitpid(d, &st, 0) != d || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			wl_die("session leader d did not exit 0");
	} else if (strcmp(mode, "full") == 0) {
		want = 100;
		z1 = fork();
		if (z1 < 0)
			wl_die("fork z1");
		if (z1 == 0)
			_exit(ZOMBIE_STATUS);
		kids[nkids++] = spawn(session_a);
		d = spawn(session_d);
		e_pid = spawn(group_e);
		if (waitpid(e_pid, &st, 0) != e_pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			wl_die("group leader e did not exit 0");
		link_no = 0;
		kids[nkids++] = spawn(chain_link);
		for (int i = 0; i < 17; i++)
			kids[nkids++] = spawn(pair);
		kids[nkids++] = spawn(leaf);
		if (waitpid(d, &st, 0) != d || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			wl_die("session leader d did not exit 0");
		for (int i = 0; i < nkids; i++)
			wait_born(kids[i]);
		siginfo_t si;
		if (waitid(P_PID, z1, &si, WEXITED | WNOWAIT) != 0)
			wl_die("waitid z1");
		c4_pid = read_pid_file("c4pid");
		z2 = read_pid_file("z2pid");
	} else {
		fprintf(stderr, "tree: unknown mode %s (full, dead-group, dead-session)\n", mode);
		return 2;
	}

	/* Everything is set up: record the tree from /proc. */
	add("root %d\ntasks %d\n", my_pid, want);
	if (z1)
		add("zombie %d exit %d\nzombie %d signal %d\n", (int)z1, ZOMBIE_STATUS, (int)z2, ZOMBIE_SIGNAL);
	if (d)
		add("dead-session-leader %d\ndead-group-leader %d\n", (int)d, (int)d);
	if (e_pid)
		add("dead-group-leader %d\n", (int)e_pid);
	if (c4_pid)
		add("dead-parent %d\n", (int)c4_pid);
	int count = 1;
	add_task(my_pid);
	if (z1) {
		add_task(z1);
		add_task(z2);
		count += 2;
	}
	wl_path(path, sizeof(path), "born");
	DIR *dir = opendir(path);
	if (!dir)
		wl_die(path);
	for (struct dirent *de; (de = readdir(dir));) {
		if (de->d_name[0] == '.' || strchr(de->d_name, '.'))
			continue;
		add_task(atoi(de->d_name));
		count++;
	}
	closedir(dir);
	if (count != want) {
		errno = EINVAL;
		fprintf(stderr, "tree has %d tasks, want %d\n", count, want);
		wl_die("tree size");
	}
	wl_write_file("ready", ready, ready_len);

	wait_check();
	check_and_reap();
	reap_children();
	for (int i = 0; i < ntasks; i++) {
		struct task *tk = &tasks[i];
		if (tk->pid == my_pid || tk->zombie)
			continue;
		char name[64], res[4096];
		snprintf(name, sizeof(name), "res/%d", tk->pid);
		if (wl_read_file(name, res, sizeof(res)) < 0)
			wl_fail("PID %d wrote no result", tk->pid);
		else if (strncmp(res, "PASS", 4) != 0)
			wl_fail("PID %d (ppid %d pgid %d sid %d): %s", tk->pid, tk->ppid, tk->pgid, tk->sid, strtok(res, "\n"));
	}
	if (ntasks != want)
		wl_fail("ready lists %d tasks, want %d", ntasks, want);
	return wl_finish();
}
