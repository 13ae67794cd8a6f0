/*
 * plainns: a process tree, dumped with a plain `ctcr dump`, whose root
 * stays in ctcr's namespaces while its children made namespaces of their
 * own. One state per mode:
 *
 *   plainns DIR uts     child X: its own UTS namespace, hostname "plainns-uts"
 *   plainns DIR ipc     child X: its own IPC namespace holding a SysV segment
 *                       (attached), a semaphore set, a message queue and a
 *                       POSIX queue with a message and a descriptor held open
 *   plainns DIR net     child X: its own network namespace, lo up, a TCP
 *                       listener on 127.0.0.1 it connects to after restore,
 *                       and an established connection to it with a byte
 *                       queued each way; a unix listener bound to an
 *                       abstract name it connects to after restore
 *   plainns DIR mnt     child X: its own mount namespace, a private tmpfs
 *                       on DIR/mnt holding a file it watches with inotify
 *   plainns DIR shared  child B: its own UTS, IPC, network and mount
 *                       namespaces; its child D stays in them; B's sibling
 *                       C joins them with setns
 *   plainns DIR root    no child: the root itself, started in UTS, IPC and
 *                       network namespaces of its own, holds the states of
 *                       uts, ipc and net (hostname "plainns-root")
 *
 * After DIR/check every child checks that it is (still) in namespaces
 * other than its parent's, or the same as the task it shares with, and
 * that the state is there, into DIR/res-NAME; the root checks that none
 * of it leaked into its own namespaces and gathers the children's results.
 */
#include "workload.h"

#include <arpa/inet.h>
#include <mqueue.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <stddef.h>

#define PORT 4242
#define TMPFS_MAGIC 0x01021994

static const char *mode;
static int key; /* SysV key, unique per run */
static char mqname[32]; /* POSIX queue name, unique per run */
static char *seg;
static mqd_t held_mq = (mqd_t)-1; /* a descriptor kept open on the POSIX queue */
static int listener = -1, conn_c = -1, conn_s = -1, abstract_listener = -1;

static void must(int ok, const char *what)
{
	if (!ok)
		wl_die(what);
}

static const char *kinds[] = { "uts", "ipc", "net", "mnt" };
#define NKINDS 4

static void ns_of(int pid, const char *kind, char *buf, size_t cap)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/ns/%s", pid, kind);
	ssize_t n = readlink(p, buf, cap - 1);
	if (n < 0) {
		snprintf(buf, cap, "(unreadable: %s)", strerror(errno));
		return;
	}
	buf[n] = 0;
}

/* same_ns checks, for each kind, whether tasks a and b share it (want[i]). */
static void same_ns(const char *who, int a, const char *an, int b, const char *bn, const int want[NKINDS])
{
	for (int i = 0; i < NKINDS; i++) {
		char x[128], y[128];
		ns_of(a, kinds[i], x, sizeof(x));
		ns_of(b, kinds[i], y, sizeof(y));
		if ((strcmp(x, y) == 0) != want[i])
			wl_fail("%s: %s (%s) and %s (%s) %s the %s namespace", who, an, x, bn, y,
				want[i] ? "do not share" : "share", kinds[i]);
	}
}

static void check_host(const char *who, const char *want)
{
	char h[65] = "";
	gethostname(h, sizeof(h) - 1);
	if (strcmp(h, want) != 0)
		wl_fail("%s: hostname \"%s\", want \"%s\"", who, h, want);
}

static void lo_set_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	must(s >= 0, "socket");
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, "lo");
	must(ioctl(s, SIOCGIFFLAGS, &ifr) == 0, "SIOCGIFFLAGS");
	ifr.ifr_flags |= IFF_UP;
	must(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "SIOCSIFFLAGS");
	close(s);
}

static void check_lo_up(const char *who)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, "lo");
	if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) != 0)
		wl_fail("%s: SIOCGIFFLAGS lo: %s", who, strerror(errno));
	else if (!(ifr.ifr_flags & IFF_UP))
		wl_fail("%s: lo of its network namespace is down", who);
	if (s >= 0)
		close(s);
}

/* --- ipc --- */

static void make_ipc(void)
{
	int id = shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600);
	must(id >= 0, "shmget");
	seg = shmat(id, NULL, 0);
	must(seg != (void *)-1, "shmat");
	strcpy(seg, "plainns-shm");
	int sem = semget(key, 2, IPC_CREAT | IPC_EXCL | 0600);
	must(sem >= 0, "semget");
	must(semctl(sem, 0, SETVAL, 3) == 0 && semctl(sem, 1, SETVAL, 5) == 0, "semctl SETVAL");
	int q = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
	must(q >= 0, "msgget");
	struct { long type; char text[32]; } m = { 7, "plainns-msg" };
	must(msgsnd(q, &m, sizeof(m.text), 0) == 0, "msgsnd");
	struct mq_attr a = { .mq_maxmsg = 4, .mq_msgsize = 32 };
	held_mq = mq_open(mqname, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK | O_CLOEXEC, 0600, &a);
	must(held_mq != (mqd_t)-1, "mq_open");
	must(mq_send(held_mq, "plainns-mq", 10, 3) == 0, "mq_send");
}

/* check_held checks the descriptor kept open is on the queue of the name,
 * with curmsgs messages in it, and still non-blocking. */
static void check_held(const char *who, long curmsgs)
{
	struct mq_attr a;
	if (mq_getattr(held_mq, &a) != 0)
		wl_fail("%s: the descriptor held on POSIX queue %s: %s", who, mqname, strerror(errno));
	else if (a.mq_curmsgs != curmsgs || a.mq_msgsize != 32 || !(a.mq_flags & O_NONBLOCK))
		wl_fail("%s: the descriptor held on POSIX queue %s: %ld messages of %ld bytes, flags %#lx; want %ld of 32, O_NONBLOCK", who, mqname, a.mq_curmsgs, a.mq_msgsize, a.mq_flags, curmsgs);
}

/* check_mq checks the POSIX queue is there with its message (own) or not. */
static void check_mq(const char *who, int own)
{
	mqd_t mq = mq_open(mqname, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	if (mq == (mqd_t)-1) {
		if (own)
			wl_fail("%s: POSIX queue %s: %s", who, mqname, strerror(errno));
		return;
	}
	if (!own) {
		wl_fail("%s: sees POSIX queue %s of a child's IPC namespace", who, mqname);
		mq_close(mq);
		return;
	}
	char buf[32] = "";
	unsigned prio = 0;
	ssize_t n = mq_receive(mq, buf, sizeof(buf), &prio);
	if (n != 10 || prio != 3 || memcmp(buf, "plainns-mq", 10) != 0)
		wl_fail("%s: POSIX queue %s gave %zd bytes \"%.10s\" at priority %u (%s), want \"plainns-mq\" at 3", who, mqname, n, buf, prio, n < 0 ? strerror(errno) : "");
	mq_close(mq);
}

static void check_ipc(const char *who)
{
	if (strcmp(seg, "plainns-shm") != 0)
		wl_fail("%s: the attached segment holds \"%.20s\"", who, seg);
	int id = shmget(key, 0, 0);
	if (id < 0)
		wl_fail("%s: no segment 0x%x in its IPC namespace: %s", who, key, strerror(errno));
	int sem = semget(key, 0, 0);
	if (sem < 0)
		wl_fail("%s: no semaphore set 0x%x: %s", who, key, strerror(errno));
	else if (semctl(sem, 0, GETVAL) != 3 || semctl(sem, 1, GETVAL) != 5)
		wl_fail("%s: semaphores hold %d and %d, want 3 and 5", who, semctl(sem, 0, GETVAL), semctl(sem, 1, GETVAL));
	int q = msgget(key, 0);
	struct { long type; char text[32]; } m = { 0 };
	if (q < 0)
		wl_fail("%s: no message queue 0x%x: %s", who, key, strerror(errno));
	else if (msgrcv(q, &m, sizeof(m.text), 0, IPC_NOWAIT) < 0)
		wl_fail("%s: no message in queue 0x%x: %s", who, key, strerror(errno));
	else if (m.type != 7 || strcmp(m.text, "plainns-msg") != 0)
		wl_fail("%s: message of type %ld \"%.20s\", want 7 \"plainns-msg\"", who, m.type, m.text);
	check_held(who, 1);
	check_mq(who, 1);
	/* The message read through the name is gone from the held queue. */
	check_held(who, 0);
}

/* --- net --- */

static void make_listener(void)
{
	lo_set_up();
	listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(listener >= 0, "socket");
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	must(bind(listener, (struct sockaddr *)&a, sizeof(a)) == 0, "bind 127.0.0.1:4242");
	must(listen(listener, 4) == 0, "listen");
	conn_c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	must(conn_c >= 0 && connect(conn_c, (struct sockaddr *)&a, sizeof(a)) == 0, "connect");
	conn_s = accept(listener, NULL, NULL);
	must(conn_s >= 0, "accept");
	must(write(conn_c, "c", 1) == 1 && write(conn_s, "s", 1) == 1, "write to the connection");
	abstract_listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	int len = snprintf(u.sun_path + 1, sizeof(u.sun_path) - 1, "plainns-%d", getpid()) + 1;
	must(abstract_listener >= 0 && bind(abstract_listener, (struct sockaddr *)&u, offsetof(struct sockaddr_un, sun_path) + len) == 0, "bind an abstract name");
	must(listen(abstract_listener, 4) == 0, "listen on the abstract name");
}

/* check_abstract connects to the abstract name its listener was bound to. */
static void check_abstract(const char *who)
{
	struct sockaddr_un u = { .sun_family = AF_UNIX };
	int len = snprintf(u.sun_path + 1, sizeof(u.sun_path) - 1, "plainns-%d", getpid()) + 1;
	int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&u, offsetof(struct sockaddr_un, sun_path) + len) != 0) {
		wl_fail("%s: connect to its abstract name @plainns-%d: %s", who, getpid(), strerror(errno));
		return;
	}
	int s = accept(abstract_listener, NULL, NULL);
	char b = 0;
	if (s < 0 || write(c, "u", 1) != 1 || read(s, &b, 1) != 1 || b != 'u')
		wl_fail("%s: no byte through the connection to its abstract name: %s", who, strerror(errno));
	if (s >= 0)
		close(s);
	close(c);
}

static void check_listener(const char *who)
{
	check_lo_up(who);
	char x = 0, y = 0;
	if (read(conn_s, &x, 1) != 1 || read(conn_c, &y, 1) != 1 || x != 'c' || y != 's')
		wl_fail("%s: the established connection gave '%c' and '%c', want 'c' and 's' (%s)", who, x ? x : '?', y ? y : '?', strerror(errno));
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(PORT), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) != 0) {
		wl_fail("%s: connect to its listener on 127.0.0.1:%d: %s", who, PORT, strerror(errno));
		return;
	}
	int s = accept(listener, NULL, NULL);
	if (s < 0) {
		wl_fail("%s: accept on its listener: %s", who, strerror(errno));
		return;
	}
	char b = 0;
	if (write(c, "x", 1) != 1 || read(s, &b, 1) != 1 || b != 'x')
		wl_fail("%s: no byte through the reconnected connection", who);
	close(s);
	close(c);
}

/* --- mnt --- */

static char mntdir[4096], mntfile[4096];

static void make_tmpfs(void)
{
	must(mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) == 0, "make / a slave");
	must(mount("tmpfs", mntdir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") == 0, "mount tmpfs");
	int fd = open(mntfile, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	must(fd >= 0 && write(fd, "plainns-tmpfs", 13) == 13, mntfile);
	close(fd);
}

/* make_watch watches the file of the private tmpfs with inotify: its
 * path exists only in this task's mount namespace. */
static int ify = -1;
static void make_watch(void)
{
	ify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	must(ify >= 0, "inotify_init1");
	must(inotify_add_watch(ify, mntfile, IN_MODIFY) == 1, "inotify_add_watch");
}

/* check_watch writes to the watched file and reads the event. */
static void check_watch(const char *who)
{
	int fd = open(mntfile, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0 || write(fd, "+", 1) != 1) {
		wl_fail("%s: append to %s: %s", who, mntfile, strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	close(fd);
	struct inotify_event ev[4];
	ssize_t n = read(ify, ev, sizeof(ev));
	if (n < (ssize_t)sizeof(ev[0]))
		wl_fail("%s: no inotify event for the write to %s (%zd: %s)", who, mntfile, n, n < 0 ? strerror(errno) : "short");
	else if (ev[0].wd != 1 || !(ev[0].mask & IN_MODIFY))
		wl_fail("%s: inotify event wd %d mask %#x for %s, want wd 1 IN_MODIFY", who, ev[0].wd, ev[0].mask, mntfile);
}

static void check_tmpfs(const char *who, int own)
{
	struct statfs sf;
	if (statfs(mntdir, &sf) != 0) {
		wl_fail("%s: statfs %s: %s", who, mntdir, strerror(errno));
		return;
	}
	if ((sf.f_type == TMPFS_MAGIC) != own)
		wl_fail("%s: %s is %sa tmpfs (0x%lx)", who, mntdir, own ? "not " : "", (long)sf.f_type);
	char buf[32] = "";
	int fd = open(mntfile, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (own)
			wl_fail("%s: %s: %s", who, mntfile, strerror(errno));
		return;
	}
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (!own)
		wl_fail("%s: sees %s, a file of its child's own mount namespace", who, mntfile);
	else if (n != 13 || strcmp(buf, "plainns-tmpfs") != 0)
		wl_fail("%s: %s holds \"%s\"", who, mntfile, buf);
}

/* --- children --- */

/* child_wait: ready-NAME, then at DIR/check run check into res-NAME. */
static void child_wait(const char *name, void (*check)(const char *))
{
	char f[64];
	/* Gone with its parent if a test ends early; kept across restore. */
	must(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "PR_SET_PDEATHSIG");
	snprintf(f, sizeof(f), "ready-%s", name);
	wl_write_file(f, "1", 1);
	while (!wl_check_requested())
		wl_sleep_ms(20);
	check(name);
	snprintf(f, sizeof(f), "res-%s", name);
	const char *out = wl_failures[0] ? wl_failures : "PASS";
	wl_write_file(f, out, strlen(out));
	/* Alive until the root has compared the namespaces of every task. */
	char buf[4];
	for (int i = 0; i < 1000 && wl_read_file("compared", buf, sizeof(buf)) < 0; i++)
		wl_sleep_ms(20);
	exit(wl_failures[0] ? 1 : 0);
}

static const int differ_in[NKINDS][NKINDS] = {
	/* shares all but kind i with its parent */
	{ 0, 1, 1, 1 }, { 1, 0, 1, 1 }, { 1, 1, 0, 1 }, { 1, 1, 1, 0 },
};
static const int none[NKINDS] = { 0, 0, 0, 0 };
static const int all[NKINDS] = { 1, 1, 1, 1 };

static int kind_index(const char *k)
{
	for (int i = 0; i < NKINDS; i++)
		if (strcmp(kinds[i], k) == 0)
			return i;
	return -1;
}

static void check_x(const char *who)
{
	same_ns(who, getpid(), "X", getppid(), "its parent", differ_in[kind_index(mode)]);
	if (strcmp(mode, "uts") == 0)
		check_host(who, "plainns-uts");
	else if (strcmp(mode, "ipc") == 0)
		check_ipc(who);
	else if (strcmp(mode, "net") == 0) {
		check_listener(who);
		check_abstract(who);
	}
	else {
		check_tmpfs(who, 1);
		check_watch(who);
	}
}

static int pid_b;
static char host_a[65];

static void check_shared(const char *who)
{
	check_host(who, "plainns-shared");
	int key_ok = shmget(key, 0, 0) >= 0;
	if (!key_ok)
		wl_fail("%s: no segment 0x%x of B's IPC namespace: %s", who, key, strerror(errno));
	check_lo_up(who);
	check_tmpfs(who, 1);
}

static void check_b(const char *who)
{
	same_ns(who, getpid(), "B", getppid(), "its parent A", none);
	check_shared(who);
}

static void check_c(const char *who)
{
	same_ns(who, getpid(), "C", pid_b, "its sibling B", all);
	same_ns(who, getpid(), "C", getppid(), "its parent A", none);
	check_shared(who);
}

static void check_d(const char *who)
{
	same_ns(who, getpid(), "D", getppid(), "its parent B", all);
	check_shared(who);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3) {
		fprintf(stderr, "usage: %s DIR uts|ipc|net|mnt|shared\n", argv[0]);
		return 2;
	}
	mode = argv[2];
	key = 0x504e0000 | (getpid() & 0xffff);
	snprintf(mqname, sizeof(mqname), "/plainns-%d", getpid());
	gethostname(host_a, sizeof(host_a) - 1);
	snprintf(mntdir, sizeof(mntdir), "%s/mnt", wl_dir);
	snprintf(mntfile, sizeof(mntfile), "%s/mnt/file", wl_dir);
	must(mkdir(mntdir, 0755) == 0, "mkdir DIR/mnt");
	int self = getpid();
	char ready[256] = "";

	if (strcmp(mode, "root") == 0) {
		must(sethostname("plainns-root", 12) == 0, "sethostname");
		make_ipc();
		make_listener();
		wl_ready("root %d\n", self);
		while (!wl_check_requested())
			wl_sleep_ms(20);
		static const int root_own[NKINDS] = { 0, 0, 0, 1 };
		same_ns("root", self, "the root", getppid(), "its parent", root_own);
		check_host("root", "plainns-root");
		check_ipc("root");
		check_listener("root");
		check_abstract("root");
		return wl_finish();
	}
	if (strcmp(mode, "shared") != 0) {
		int k = kind_index(mode);
		if (k < 0) {
			fprintf(stderr, "unknown mode %s\n", mode);
			return 2;
		}
		static const int flags[NKINDS] = { CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWNS };
		pid_t x = fork();
		must(x >= 0, "fork");
		if (x == 0) {
			must(unshare(flags[k]) == 0, "unshare");
			switch (k) {
			case 0: must(sethostname("plainns-uts", 11) == 0, "sethostname"); break;
			case 1: make_ipc(); break;
			case 2: make_listener(); break;
			case 3: make_tmpfs(); make_watch(); break;
			}
			child_wait("x", check_x);
		}
		wl_wait_file("ready-x");
		snprintf(ready, sizeof(ready), "x %d\n", x);
	} else {
		pid_t b = fork();
		must(b >= 0, "fork");
		if (b == 0) {
			must(unshare(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWNS) == 0, "unshare");
			must(sethostname("plainns-shared", 14) == 0, "sethostname");
			must(shmget(key, 4096, IPC_CREAT | IPC_EXCL | 0600) >= 0, "shmget");
			lo_set_up();
			make_tmpfs();
			pid_t d = fork();
			must(d >= 0, "fork");
			if (d == 0)
				child_wait("d", check_d);
			wl_wait_file("ready-d");
			child_wait("b", check_b);
		}
		pid_b = b;
		wl_wait_file("ready-b");
		pid_t c = fork();
		must(c >= 0, "fork");
		if (c == 0) {
			for (int i = 0; i < NKINDS; i++) {
				char p[64];
				snprintf(p, sizeof(p), "/proc/%d/ns/%s", b, kinds[i]);
				int fd = open(p, O_RDONLY | O_CLOEXEC);
				must(fd >= 0 && setns(fd, 0) == 0, p);
				close(fd);
			}
			child_wait("c", check_c);
		}
		wl_wait_file("ready-c");
		snprintf(ready, sizeof(ready), "b %d\nc %d\n", b, c);
	}
	wl_ready("%s", ready);
	while (!wl_check_requested())
		wl_sleep_ms(20);

	/* Nothing of the children's namespaces is in the root's. */
	check_host("A", host_a);
	if (shmget(key, 0, 0) >= 0)
		wl_fail("A: sees segment 0x%x of a child's IPC namespace", key);
	check_mq("A", 0);
	check_tmpfs("A", 0);
	const char *names[] = { "x", "b", "c", "d" };
	for (int i = 0; i < 4; i++) {
		char res[64], buf[4096];
		if ((strcmp(mode, "shared") == 0) == (i == 0))
			continue;
		snprintf(res, sizeof(res), "res-%s", names[i]);
		wl_wait_file(res);
		if (wl_read_file(res, buf, sizeof(buf)) < 0 || strcmp(buf, "PASS") != 0)
			wl_fail("%s", buf);
	}
	(void)self;
	wl_write_file("compared", "1", 1);
	int st;
	while (wait(&st) > 0 || errno == EINTR)
		;
	return wl_finish();
}
