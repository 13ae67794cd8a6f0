/*
 * nestedns: tasks below the root in UTS, IPC and network namespaces of
 * their own, as systemd services (PrivateNetwork=) and nested containers
 * have them. Runs as a container's init, statically linked.
 *
 *   nestedns DIR [MOUNT]
 *
 * Before DIR/ready:
 *   - the root A keeps a SysV segment with key 0x4e53 holding "root";
 *   - B unshares UTS, IPC, network and mounts: hostname "inner-b", lo
 *     up, its own segment 0x4e53 holding "nested-b", attached; a tmpfs
 *     of its own on /tmp holding b-file, /data/priv-b bound on /etc (as
 *     PrivateTmp= binds its directory), /bin bound read-only on itself
 *     (ProtectSystem=), MOUNT (default LXC's boot_id bind) unmounted;
 *   - C, B's child, stays in B's namespaces;
 *   - D, B's child made after the unshare, goes back into A's (setns);
 *   - E unshares UTS only: hostname "inner-e".
 * After DIR/check each child checks what it sees (names, segment, lo)
 * into DIR/res-NAME; A checks which tasks share which namespaces, then
 * gathers the children's results. It then waits to be killed: as a
 * container's init its end would take the container's /data along.
 */
#include "workload.h"

#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define KEY 0x4e53

static void must(int ok, const char *what)
{
	if (!ok)
		wl_die(what);
}

static char *segment(const char *content)
{
	int id = shmget(KEY, 4096, IPC_CREAT | IPC_EXCL | 0600);
	must(id >= 0, "shmget");
	char *p = shmat(id, NULL, 0);
	must(p != (void *)-1, "shmat");
	strcpy(p, content);
	return p;
}

static void check_segment(const char *who, char *attached, const char *want)
{
	if (attached && strcmp(attached, want) != 0)
		wl_fail("%s: the attached segment holds \"%.20s\", want \"%s\"", who, attached, want);
	int id = shmget(KEY, 0, 0);
	if (id < 0) {
		wl_fail("%s: no segment with key 0x%x in its IPC namespace: %s", who, KEY, strerror(errno));
		return;
	}
	char *p = shmat(id, NULL, SHM_RDONLY);
	if (p == (void *)-1) {
		wl_fail("%s: shmat: %s", who, strerror(errno));
		return;
	}
	if (strcmp(p, want) != 0)
		wl_fail("%s: segment 0x%x of its namespace holds \"%.20s\", want \"%s\"", who, KEY, p, want);
	shmdt(p);
}

static void check_host(const char *who, const char *want)
{
	char h[65] = "";
	gethostname(h, sizeof(h) - 1);
	if (strcmp(h, want) != 0)
		wl_fail("%s: hostname \"%s\", want \"%s\"", who, h, want);
}

static int lo_up(void)
{
	int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	must(s >= 0, "socket");
	struct ifreq ifr = { 0 };
	strcpy(ifr.ifr_name, "lo");
	must(ioctl(s, SIOCGIFFLAGS, &ifr) == 0, "SIOCGIFFLAGS");
	close(s);
	return (ifr.ifr_flags & IFF_UP) != 0;
}

/* child_wait runs a child until DIR/check, then its check into res-NAME. */
static void child_wait(const char *name, void (*check)(void))
{
	char ready[64];
	snprintf(ready, sizeof(ready), "ready-%s", name);
	wl_write_file(ready, "1", 1);
	while (!wl_check_requested())
		wl_sleep_ms(50);
	check();
	char res[64];
	snprintf(res, sizeof(res), "res-%s", name);
	const char *out = wl_failures[0] ? wl_failures : "PASS";
	wl_write_file(res, out, strlen(out));
	/* Alive until A has compared the namespaces of every task. */
	char buf[4];
	while (wl_read_file("compared", buf, sizeof(buf)) < 0)
		wl_sleep_ms(50);
	exit(wl_failures[0] ? 1 : 0);
}

static char *seg_b;
static char host_a[65];

/* The container's mount B unmounts. */
static const char *gone_mp = "/proc/sys/kernel/random/boot_id";

static int mounted(const char *mp)
{
	char buf[1 << 16], pat[256];
	int fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
	must(fd >= 0, "mountinfo");
	ssize_t n, off = 0;
	while ((n = read(fd, buf + off, sizeof(buf) - 1 - off)) > 0)
		off += n;
	close(fd);
	buf[off] = 0;
	snprintf(pat, sizeof(pat), " %s ", mp);
	return strstr(buf, pat) != NULL;
}

static void file_is(const char *who, const char *path, const char *want)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (want)
			wl_fail("%s: %s: %s", who, path, strerror(errno));
		return;
	}
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (!want)
		wl_fail("%s: %s exists: it is another mount namespace's", who, path);
	else if (n < 0 || strcmp(buf, want) != 0)
		wl_fail("%s: %s holds \"%s\", want \"%s\"", who, path, buf, want);
}

/* check_mounts checks the mounts B made, seen (nested) or not. */
static void check_mounts(const char *who, int nested)
{
	file_is(who, "/tmp/b-file", nested ? "tmpfs-b" : NULL);
	file_is(who, "/etc/marker", nested ? "bind-b" : NULL);
	int fd = open("/bin/.probe", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd >= 0) {
		close(fd);
		unlink("/bin/.probe");
	}
	if (nested && (fd >= 0 || errno != EROFS))
		wl_fail("%s: /bin is writable (%s), want read-only", who, fd >= 0 ? "created a file" : strerror(errno));
	if (!nested && fd < 0)
		wl_fail("%s: /bin is not writable: %s", who, strerror(errno));
	if (mounted(gone_mp) == nested)
		wl_fail("%s: %s is %smounted", who, gone_mp, nested ? "" : "not ");
}

static void check_b(void)
{
	check_host("B", "inner-b");
	check_segment("B", seg_b, "nested-b");
	if (!lo_up())
		wl_fail("B: lo of its network namespace is down");
	check_mounts("B", 1);
}
static void check_c(void) { check_host("C", "inner-b"); check_segment("C", seg_b, "nested-b"); check_mounts("C", 1); }
static void check_d(void) { check_host("D", host_a); check_segment("D", NULL, "root"); check_mounts("D", 0); }
static void check_e(void) { check_host("E", "inner-e"); check_segment("E", NULL, "root"); }

static const char *kinds[] = { "uts", "ipc", "net", "mnt" };
#define NKINDS 4

static int ns_of(int pid, const char *kind, char *buf, size_t cap)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/ns/%s", pid, kind);
	ssize_t n = readlink(p, buf, cap - 1);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return 0;
}

/* same checks whether a and b share (or not) each namespace kind in mask. */
static void same(const char *an, int a, const char *bn, int b, int want_same[NKINDS])
{
	for (int i = 0; i < NKINDS; i++) {
		char x[64], y[64];
		if (ns_of(a, kinds[i], x, sizeof(x)) || ns_of(b, kinds[i], y, sizeof(y))) {
			wl_fail("%s or %s: %s namespace unreadable: %s", an, bn, kinds[i], strerror(errno));
			continue;
		}
		if ((strcmp(x, y) == 0) != want_same[i])
			wl_fail("%s (%s) and %s (%s) %s the %s namespace", an, x, bn, y, want_same[i] ? "do not share" : "share", kinds[i]);
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc > 2)
		gone_mp = argv[2];
	gethostname(host_a, sizeof(host_a) - 1);
	char *seg_a = segment("root");
	int pipefd[2];
	must(pipe(pipefd) == 0, "pipe");

	pid_t b = fork();
	must(b >= 0, "fork");
	if (b == 0) {
		close(pipefd[0]);
		int back[NKINDS];
		for (int i = 0; i < NKINDS; i++) {
			char p[32];
			snprintf(p, sizeof(p), "/proc/self/ns/%s", kinds[i]);
			must((back[i] = open(p, O_RDONLY | O_CLOEXEC)) >= 0, p);
		}
		must(mkdir("/data/priv-b", 0755) == 0, "mkdir /data/priv-b");
		wl_write_file("priv-b/marker", "bind-b", 6);
		must(unshare(CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWNS) == 0, "unshare");
		must(mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) == 0, "make / a slave");
		must(mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=1777") == 0, "mount tmpfs on /tmp");
		int bf = open("/tmp/b-file", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
		must(bf >= 0 && write(bf, "tmpfs-b", 7) == 7, "/tmp/b-file");
		close(bf);
		must(mount("/data/priv-b", "/etc", NULL, MS_BIND, NULL) == 0, "bind /data/priv-b on /etc");
		must(mount("/bin", "/bin", NULL, MS_BIND, NULL) == 0, "bind /bin");
		must(mount("none", "/bin", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) == 0, "make /bin read-only");
		must(umount2(gone_mp, MNT_DETACH) == 0, "umount");
		must(sethostname("inner-b", 7) == 0, "sethostname");
		seg_b = segment("nested-b");
		int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		struct ifreq ifr = { 0 };
		strcpy(ifr.ifr_name, "lo");
		must(ioctl(s, SIOCGIFFLAGS, &ifr) == 0, "SIOCGIFFLAGS");
		ifr.ifr_flags |= IFF_UP;
		must(ioctl(s, SIOCSIFFLAGS, &ifr) == 0, "SIOCSIFFLAGS");
		close(s);
		pid_t c = fork();
		must(c >= 0, "fork");
		if (c == 0) {
			for (int i = 0; i < NKINDS; i++)
				close(back[i]);
			child_wait("c", check_c);
		}
		pid_t d = fork();
		must(d >= 0, "fork");
		if (d == 0) {
			shmdt(seg_b);
			seg_b = NULL;
			for (int i = 0; i < NKINDS; i++) {
				must(setns(back[i], 0) == 0, "setns");
				close(back[i]);
			}
			child_wait("d", check_d);
		}
		for (int i = 0; i < NKINDS; i++)
			close(back[i]);
		int pids[2] = { c, d };
		must(write(pipefd[1], pids, sizeof(pids)) == sizeof(pids), "write pids");
		close(pipefd[1]);
		int st;
		/* B checks itself once C and D are done, reaping them. */
		pid_t w;
		while ((w = wait(&st)) > 0 || errno == EINTR)
			;
		child_wait("b", check_b);
	}
	close(pipefd[1]);
	int cd[2];
	must(read(pipefd[0], cd, sizeof(cd)) == sizeof(cd), "read pids");
	close(pipefd[0]);

	pid_t e = fork();
	must(e >= 0, "fork");
	if (e == 0) {
		shmdt(seg_a);
		must(unshare(CLONE_NEWUTS) == 0, "unshare");
		must(sethostname("inner-e", 7) == 0, "sethostname");
		child_wait("e", check_e);
	}
	wl_wait_file("ready-c");
	wl_wait_file("ready-d");
	wl_wait_file("ready-e");
	wl_ready("b %d\nc %d\nd %d\ne %d\n", b, cd[0], cd[1], e);
	while (!wl_check_requested())
		wl_sleep_ms(50);

	int self = getpid();
	same("A", self, "B", b, (int[NKINDS]){ 0, 0, 0, 0 });
	same("B", b, "C", cd[0], (int[NKINDS]){ 1, 1, 1, 1 });
	same("A", self, "D", cd[1], (int[NKINDS]){ 1, 1, 1, 1 });
	same("A", self, "E", e, (int[NKINDS]){ 0, 1, 1, 1 });
	same("B", b, "E", e, (int[NKINDS]){ 0, 0, 0, 0 });
	check_host("A", host_a);
	check_segment("A", seg_a, "root");
	check_mounts("A", 0);
	wl_write_file("compared", "1", 1);

	/* E, then B (which waits for C and D first). */
	int st;
	waitpid(e, &st, 0);
	waitpid(b, &st, 0);
	const char *names[] = { "b", "c", "d", "e" };
	for (int i = 0; i < 4; i++) {
		char res[64], buf[4096];
		snprintf(res, sizeof(res), "res-%s", names[i]);
		if (wl_read_file(res, buf, sizeof(buf)) < 0)
			wl_fail("%s: no result", names[i]);
		else if (strcmp(buf, "PASS") != 0)
			wl_fail("%s", buf);
	}
	wl_finish();
	/* As a container's init it stays, so the result can be read. */
	for (;;)
		pause();
}
