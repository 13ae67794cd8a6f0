/*
 * mntprop: mount propagation between a container's mount namespace and
 * the nested ones of its tasks, as systemd and its services have it.
 * Runs as a container's init (A), statically linked, with CAP_SYS_ADMIN
 * and CAP_SYS_CHROOT.
 *
 *   mntprop DIR
 *
 * Before DIR/ready:
 *   - A mounts a tmpfs on /srv/p and makes it shared (group g1);
 *   - P unshares its mount namespace and changes nothing: its /srv/p is
 *     a peer of A's;
 *   - S unshares and makes everything a slave (MS_SLAVE|MS_REC, as
 *     systemd does for PrivateTmp=), then mounts a tmpfs of its own on
 *     /srv/p/s-own;
 *   - SS unshares, makes everything a slave, makes /srv/p shared again
 *     (group g2, a slave of g1) and binds it on /srv/q (a peer in g2).
 * A checks that the mountinfo of the four shows exactly that, with the
 * group numbers renamed in order of appearance, and saves it.
 *
 * After DIR/check A reads the four mountinfos again: the same groups
 * (by structure, not by number). Then mounts made now must travel as
 * propagation says: A's (below /srv/p) into P, S and SS (both of its
 * mounts); P's into A, S and SS; S's nowhere else; SS's (below /srv/q)
 * to its /srv/p and not to A. A makes each mount in the namespace of
 * the task it stands for (setns), which is what the kernel propagates
 * from. A then waits to be killed (its end would take /data along).
 */
#include "workload.h"

#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>

static void must(int ok, const char *what)
{
	if (!ok)
		wl_die(what);
}

static void idle(void)
{
	for (;;)
		wl_sleep_ms(1000);
}

static char mi[1 << 17];

/* read_mountinfo reads /proc/PID/mountinfo into mi; -1 if it cannot. */
static int read_mountinfo(int pid)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/mountinfo", pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n, off = 0;
	while ((n = read(fd, mi + off, sizeof(mi) - 1 - off)) > 0)
		off += n;
	close(fd);
	mi[off] = 0;
	return 0;
}

static int mounted_in(int pid, const char *mp)
{
	char pat[256];
	if (read_mountinfo(pid) < 0)
		return -1;
	snprintf(pat, sizeof(pat), " %s ", mp);
	return strstr(mi, pat) != NULL;
}

/* The group numbers seen so far, renamed g1, g2... in that order. */
static unsigned long groups[64];
static int ngroups;

static int group_name(unsigned long g)
{
	for (int i = 0; i < ngroups; i++)
		if (groups[i] == g)
			return i + 1;
	if (ngroups < 64)
		groups[ngroups++] = g;
	return ngroups;
}

/*
 * describe appends to out, for each of the watched mount points that
 * pid's namespace has, "WHO MP FIELDS\n": the optional fields of its
 * mountinfo line (shared:N, master:N, unbindable) with N renamed, or
 * "private".
 */
static void describe(char *out, size_t cap, const char *who, int pid)
{
	static const char *watched[] = { "/srv/p", "/srv/p/s-own", "/srv/q" };
	if (read_mountinfo(pid) < 0) {
		wl_fail("%s (%d): mountinfo: %s", who, pid, strerror(errno));
		return;
	}
	for (size_t w = 0; w < sizeof(watched) / sizeof(watched[0]); w++) {
		for (char *line = mi; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
			char *end = strchr(line, '\n');
			char l[1024];
			size_t len = end ? (size_t)(end - line) : strlen(line);
			if (len >= sizeof(l))
				continue;
			memcpy(l, line, len);
			l[len] = 0;
			char *f[64];
			int nf = 0;
			for (char *tok = strtok(l, " "); tok && nf < 64; tok = strtok(NULL, " "))
				f[nf++] = tok;
			if (nf < 7 || strcmp(f[4], watched[w]) != 0)
				continue;
			char fields[256] = "";
			for (int i = 6; i < nf && strcmp(f[i], "-") != 0; i++) {
				char one[64];
				unsigned long g;
				if (sscanf(f[i], "shared:%lu", &g) == 1)
					snprintf(one, sizeof(one), "shared:g%d", group_name(g));
				else if (sscanf(f[i], "master:%lu", &g) == 1)
					snprintf(one, sizeof(one), "master:g%d", group_name(g));
				else if (strncmp(f[i], "propagate_from:", 15) == 0)
					continue;
				else
					snprintf(one, sizeof(one), "%s", f[i]);
				if (fields[0])
					strcat(fields, " ");
				strncat(fields, one, sizeof(fields) - strlen(fields) - 1);
			}
			size_t o = strlen(out);
			snprintf(out + o, cap - o, "%s %s %s\n", who, watched[w], fields[0] ? fields : "private");
		}
	}
}

static int kids[3]; /* P, S, SS */

static void structure(char *out, size_t cap)
{
	out[0] = 0;
	ngroups = 0;
	describe(out, cap, "A", getpid());
	describe(out, cap, "P", kids[0]);
	describe(out, cap, "S", kids[1]);
	describe(out, cap, "SS", kids[2]);
}

static const char *want =
	"A /srv/p shared:g1\n"
	"P /srv/p shared:g1\n"
	"S /srv/p master:g1\n"
	"S /srv/p/s-own private\n"
	"SS /srv/p shared:g2 master:g1\n"
	"SS /srv/q shared:g2 master:g1\n";

static int child(void (*setup)(void))
{
	int pid = fork();
	must(pid >= 0, "fork");
	if (pid == 0) {
		must(unshare(CLONE_NEWNS) == 0, "unshare");
		setup();
		wl_write_file("kid-ready", "1", 1);
		idle();
	}
	char buf[4];
	for (int i = 0; i < 400 && wl_read_file("kid-ready", buf, sizeof(buf)) < 0; i++)
		wl_sleep_ms(25);
	if (wl_read_file("kid-ready", buf, sizeof(buf)) < 0) {
		errno = ETIMEDOUT;
		wl_die("a child's setup");
	}
	char p[4096];
	wl_path(p, sizeof(p), "kid-ready");
	unlink(p);
	return pid;
}

static void setup_p(void) {}

static void setup_s(void)
{
	must(mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) == 0, "S: make / a slave");
	must(mount("s-own", "/srv/p/s-own", "tmpfs", 0, "size=64k") == 0, "S: tmpfs on /srv/p/s-own");
}

static void setup_ss(void)
{
	must(mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) == 0, "SS: make / a slave");
	must(mount("none", "/srv/p", NULL, MS_SHARED, NULL) == 0, "SS: make /srv/p shared");
	must(mount("/srv/p", "/srv/q", NULL, MS_BIND, NULL) == 0, "SS: bind /srv/p on /srv/q");
}

/* mount_as mounts a tmpfs on mp in the mount namespace of pid. */
static void mount_as(const char *who, int pid, const char *mp)
{
	char p[64];
	int home = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	must(home >= 0, "own mount namespace");
	snprintf(p, sizeof(p), "/proc/%d/ns/mnt", pid);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	must(fd >= 0, p);
	must(setns(fd, CLONE_NEWNS) == 0, "setns");
	if (mount("mntprop", mp, "tmpfs", 0, "size=64k") != 0)
		wl_fail("%s: mount a tmpfs on %s: %s", who, mp, strerror(errno));
	must(setns(home, CLONE_NEWNS) == 0, "setns back");
	close(fd);
	close(home);
}

static void expect(const char *who, int pid, const char *mp, int want_there, const char *after)
{
	int got = mounted_in(pid, mp);
	if (got < 0)
		wl_fail("%s: mountinfo of %d: %s", who, pid, strerror(errno));
	else if (got != want_there)
		wl_fail("after %s, %s's namespace %s %s", after, who, got ? "has a mount at" : "has no mount at", mp);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	mkdir("/srv", 0755);
	must(mkdir("/srv/p", 0755) == 0 || errno == EEXIST, "mkdir /srv/p");
	must(mkdir("/srv/q", 0755) == 0 || errno == EEXIST, "mkdir /srv/q");
	must(mount("mntprop", "/srv/p", "tmpfs", 0, "size=1m,mode=755") == 0, "tmpfs on /srv/p");
	must(mount("none", "/srv/p", NULL, MS_SHARED, NULL) == 0, "make /srv/p shared");
	const char *dirs[] = { "/srv/p/s-own", "/srv/p/fromroot", "/srv/p/frompeer", "/srv/p/fromslave", "/srv/p/fromss" };
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++)
		must(mkdir(dirs[i], 0755) == 0, dirs[i]);
	kids[0] = child(setup_p);
	kids[1] = child(setup_s);
	kids[2] = child(setup_ss);

	static char before[8192], after[8192];
	structure(before, sizeof(before));
	if (strcmp(before, want) != 0) {
		fprintf(stderr, "the setup gave\n%swant\n%s", before, want);
		errno = EINVAL;
		wl_die("the propagation set up");
	}
	wl_ready("p %d\ns %d\nss %d\n", kids[0], kids[1], kids[2]);
	while (!wl_check_requested())
		wl_sleep_ms(50);

	structure(after, sizeof(after));
	if (strcmp(after, want) != 0)
		wl_fail("the peer groups differ from before the checkpoint: now \"%s\", want \"%s\"", after, want);

	mount_as("A", getpid(), "/srv/p/fromroot");
	expect("P", kids[0], "/srv/p/fromroot", 1, "A's mount on /srv/p/fromroot");
	expect("S", kids[1], "/srv/p/fromroot", 1, "A's mount on /srv/p/fromroot");
	expect("SS", kids[2], "/srv/p/fromroot", 1, "A's mount on /srv/p/fromroot");
	expect("SS", kids[2], "/srv/q/fromroot", 1, "A's mount on /srv/p/fromroot");

	mount_as("P", kids[0], "/srv/p/frompeer");
	expect("A", getpid(), "/srv/p/frompeer", 1, "P's mount on /srv/p/frompeer");
	expect("S", kids[1], "/srv/p/frompeer", 1, "P's mount on /srv/p/frompeer");
	expect("SS", kids[2], "/srv/q/frompeer", 1, "P's mount on /srv/p/frompeer");

	mount_as("S", kids[1], "/srv/p/fromslave");
	expect("A", getpid(), "/srv/p/fromslave", 0, "S's mount on /srv/p/fromslave");
	expect("P", kids[0], "/srv/p/fromslave", 0, "S's mount on /srv/p/fromslave");

	mount_as("SS", kids[2], "/srv/q/fromss");
	expect("SS", kids[2], "/srv/p/fromss", 1, "SS's mount on /srv/q/fromss");
	expect("A", getpid(), "/srv/p/fromss", 0, "SS's mount on /srv/q/fromss");
	expect("S", kids[1], "/srv/p/fromss", 0, "SS's mount on /srv/q/fromss");

	wl_finish();
	idle();
}
