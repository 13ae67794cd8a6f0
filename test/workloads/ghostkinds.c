/*
 * ghostkinds KIND [name-taken|in-sub]: one removed object (in-sub: in
 * DIR/sub, which the test removes in turn) that is not a regular file, still
 * held by the task. KIND is one of
 *
 *   fifo     DIR/gk-fifo (mode 0640) open by a reader (O_NONBLOCK) and
 *            a writer, 18 bytes queued, then unlinked
 *   dir      DIR/gk-dir (mode 0751, owner 1234:2345) open O_DIRECTORY,
 *            then removed
 *   cwd      DIR/gk-cwd (mode 0750) the cwd, then removed
 *   root     a child chroots into DIR/gk-root (its cwd too), which is
 *            then removed; it reports to the parent through pipes
 *   dev      DIR/gk-null, a node of /dev/null (1:3, mode 0620, owner
 *            1234:2345), open O_RDWR, then unlinked
 *   symlink  DIR/gk-link -> "some/target-xyz" open O_PATH|O_NOFOLLOW,
 *            then removed
 *
 * After restore each object is what it was: fstat gives its type, mode,
 * owner and rdev and no link; the FIFO gives back the queued bytes and
 * passes new ones between its two fds; the directory and the cwd are
 * dead (nothing can be created in them, getdents and getcwd fail with
 * ENOENT, /proc/self/cwd says " (deleted)"); the root is a dead
 * directory that is its own parent; the device reads EOF and takes
 * writes; readlinkat(fd, "") of the symlink gives its target; and no
 * name for the object is back in DIR (with name-taken, the test planted
 * a file at that name after the dump and checks that itself).
 */
#include "workload.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#define QUEUED "queued-before-dump"
#define TARGET "some/target-xyz"

static char path[4096];

static void check_stat(const char *what, struct stat *st, mode_t mode, int owner)
{
	if ((st->st_mode & (S_IFMT | 07777)) != mode)
		wl_fail("%s: mode %#o, want %#o", what, st->st_mode, mode);
	if (owner && (st->st_uid != 1234 || st->st_gid != 2345))
		wl_fail("%s: owner %u:%u, want 1234:2345", what, st->st_uid, st->st_gid);
	if (st->st_nlink != 0)
		wl_fail("%s: %lu links, want 0 (removed)", what, (unsigned long)st->st_nlink);
}

/* keep_name: the test plants a file at the object's old name after the dump. */
static int keep_name;

static void check_gone(void)
{
	if (keep_name)
		return;
	struct stat st;
	if (lstat(path, &st) == 0 || errno != ENOENT)
		wl_fail("%s exists again after restore", path);
}

/* check_dead checks that directory fd dfd is a removed one. */
static void check_dead(const char *what, int dfd)
{
	int fd = openat(dfd, "new-file", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0 || errno != ENOENT)
		wl_fail("%s: creating a file in it gave %s, want ENOENT", what, fd >= 0 ? "a file" : strerror(errno));
	if (fd >= 0)
		close(fd);
	char buf[4096];
	long n = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
	if (n >= 0 || errno != ENOENT)
		wl_fail("%s: getdents gave %ld (%s), want ENOENT", what, n, strerror(errno));
}

static int fifo(void)
{
	if (mkfifo(path, 0640) < 0 || chmod(path, 0640) < 0)
		wl_die("mkfifo");
	int rfd = open(path, O_RDONLY | O_NONBLOCK);
	int wfd = open(path, O_WRONLY);
	if (rfd < 0 || wfd < 0 || write(wfd, QUEUED, strlen(QUEUED)) != (ssize_t)strlen(QUEUED) || unlink(path) < 0)
		wl_die("fifo");
	wl_ready("rfd %d\nwfd %d\n", rfd, wfd);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	struct stat rs, ws;
	if (fstat(rfd, &rs) < 0 || fstat(wfd, &ws) < 0)
		wl_die("fstat");
	check_stat("the FIFO's reader", &rs, S_IFIFO | 0640, 0);
	if (rs.st_ino != ws.st_ino || rs.st_dev != ws.st_dev)
		wl_fail("the FIFO's reader and writer are on two inodes");
	if ((fcntl(rfd, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) != (O_RDONLY | O_NONBLOCK))
		wl_fail("the reader's flags are %#o", fcntl(rfd, F_GETFL));
	if ((fcntl(wfd, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) != O_WRONLY)
		wl_fail("the writer's flags are %#o", fcntl(wfd, F_GETFL));
	char buf[64] = { 0 };
	ssize_t n = read(rfd, buf, sizeof(buf) - 1);
	if (n != (ssize_t)strlen(QUEUED) || memcmp(buf, QUEUED, n) != 0)
		wl_fail("the FIFO gave back %zd bytes \"%s\", want \"%s\"", n, n > 0 ? buf : "", QUEUED);
	if (write(wfd, "after", 5) != 5)
		wl_fail("write to the FIFO: %s", strerror(errno));
	memset(buf, 0, sizeof(buf));
	n = read(rfd, buf, sizeof(buf) - 1);
	if (n != 5 || memcmp(buf, "after", 5) != 0)
		wl_fail("the FIFO passed %zd bytes \"%s\", want \"after\"", n, n > 0 ? buf : "");
	check_gone();
	return wl_finish();
}

static int dir(void)
{
	if (mkdir(path, 0751) < 0 || chmod(path, 0751) < 0 || chown(path, 1234, 2345) < 0)
		wl_die("mkdir");
	int dfd = open(path, O_RDONLY | O_DIRECTORY);
	if (dfd < 0 || rmdir(path) < 0)
		wl_die("dir");
	wl_ready("dfd %d\n", dfd);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	struct stat st;
	if (fstat(dfd, &st) < 0)
		wl_die("fstat");
	check_stat("the removed directory", &st, S_IFDIR | 0751, 1);
	check_dead("the removed directory", dfd);
	check_gone();
	return wl_finish();
}

/* proccwd: the cwd is the /proc directory of a child that exited and
 * was reaped; the dump refuses it by name, and the task runs on there. */
static int proccwd(void)
{
	pid_t c = fork();
	if (c < 0)
		wl_die("fork");
	if (c == 0) {
		pause();
		_exit(0);
	}
	char dir[64];
	snprintf(dir, sizeof(dir), "/proc/%d", (int)c);
	if (chdir(dir) < 0)
		wl_die(dir);
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	wl_ready("proccwd %s\n", dir);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	char buf[4096];
	if (getcwd(buf, sizeof(buf)) != NULL)
		wl_fail("getcwd in the dead /proc directory gave %s", buf);
	return wl_finish();
}

static int cwd(void)
{
	if (mkdir(path, 0750) < 0 || chmod(path, 0750) < 0 || chdir(path) < 0 || rmdir(path) < 0)
		wl_die("cwd");
	wl_ready("cwd %s\n", path);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	struct stat st;
	if (stat(".", &st) < 0)
		wl_die("stat .");
	check_stat("the removed cwd", &st, S_IFDIR | 0750, 0);
	int fd = open("new-file", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd >= 0 || errno != ENOENT)
		wl_fail("creating a file in the removed cwd gave %s, want ENOENT", fd >= 0 ? "a file" : strerror(errno));
	int dfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		wl_fail("open the removed cwd: %s", strerror(errno));
	else
		check_dead("the removed cwd", dfd);
	char buf[4096], want[4200];
	if (getcwd(buf, sizeof(buf)) != NULL || errno != ENOENT)
		wl_fail("getcwd in the removed cwd did not fail with ENOENT");
	ssize_t n = readlink("/proc/self/cwd", buf, sizeof(buf) - 1);
	buf[n < 0 ? 0 : n] = 0;
	snprintf(want, sizeof(want), "%s (deleted)", path);
	if (strcmp(buf, want) != 0)
		wl_fail("/proc/self/cwd is \"%s\", want \"%s\"", buf, want);
	check_gone();
	return wl_finish();
}

/* root_child runs chrooted into the removed directory: on 'c' from in it checks its root and answers on out. */
static void root_child(int in, int out)
{
	char c;
	while (read(in, &c, 1) < 0 && errno == EINTR)
		;
	struct stat st, up;
	if (stat("/", &st) < 0 || stat("/..", &up) < 0)
		wl_fail("stat of the root: %s", strerror(errno));
	else {
		check_stat("the removed root", &st, S_IFDIR | 0755, 0);
		if (st.st_ino != up.st_ino || st.st_dev != up.st_dev)
			wl_fail("the root's .. is not itself: the task is not chrooted there");
	}
	int dfd = open("/", O_RDONLY | O_DIRECTORY);
	if (dfd < 0)
		wl_fail("open /: %s", strerror(errno));
	else
		check_dead("the removed root", dfd);
	const char *msg = wl_failures[0] ? wl_failures : "PASS";
	if (write(out, msg, strlen(msg)) < 0)
		exit(4);
	exit(0);
}

static int root(void)
{
	int p2c[2], c2p[2];
	if (pipe(p2c) < 0 || pipe(c2p) < 0 || mkdir(path, 0755) < 0 || chmod(path, 0755) < 0)
		wl_die("root");
	pid_t pid = fork();
	if (pid < 0)
		wl_die("fork");
	if (pid == 0) {
		int dfd = open(wl_dir, O_PATH | O_DIRECTORY);
		if (dfd < 0 || chroot(path) < 0 || chdir("/") < 0 || unlinkat(dfd, "gk-root", AT_REMOVEDIR) < 0)
			wl_die("chroot");
		close(dfd);
		if (write(c2p[1], "r", 1) != 1)
			exit(5);
		root_child(p2c[0], c2p[1]);
	}
	char c;
	if (read(c2p[0], &c, 1) != 1)
		wl_die("child");
	wl_ready("child %d\n", pid);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	if (write(p2c[1], "c", 1) != 1)
		wl_die("ask the child");
	close(c2p[1]);
	char buf[8192] = { 0 };
	size_t got = 0;
	ssize_t n;
	while (got + 1 < sizeof(buf) && ((n = read(c2p[0], buf + got, sizeof(buf) - 1 - got)) > 0 || (n < 0 && errno == EINTR)))
		if (n > 0)
			got += n;
	int ws;
	if (waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
		wl_fail("the chrooted child ended with status %#x", ws);
	if (strcmp(buf, "PASS") != 0)
		wl_fail("chrooted child: %s", buf[0] ? buf : "(no answer)");
	check_gone();
	return wl_finish();
}

static int dev(void)
{
	if (mknod(path, S_IFCHR | 0620, makedev(1, 3)) < 0 || chmod(path, 0620) < 0 || chown(path, 1234, 2345) < 0)
		wl_die("mknod");
	int fd = open(path, O_RDWR);
	if (fd < 0 || unlink(path) < 0)
		wl_die("dev");
	wl_ready("fd %d\n", fd);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	struct stat st;
	if (fstat(fd, &st) < 0)
		wl_die("fstat");
	check_stat("the removed device node", &st, S_IFCHR | 0620, 1);
	if (major(st.st_rdev) != 1 || minor(st.st_rdev) != 3)
		wl_fail("the removed device node is %u:%u, want 1:3", major(st.st_rdev), minor(st.st_rdev));
	if ((fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDWR)
		wl_fail("the device's flags are %#o", fcntl(fd, F_GETFL));
	char buf[4];
	if (write(fd, "x", 1) != 1 || read(fd, buf, sizeof(buf)) != 0)
		wl_fail("the removed null device does not take writes and read EOF");
	check_gone();
	return wl_finish();
}

static int symlink_kind(void)
{
	if (symlink(TARGET, path) < 0)
		wl_die("symlink");
	int fd = open(path, O_PATH | O_NOFOLLOW);
	if (fd < 0 || unlink(path) < 0)
		wl_die("symlink fd");
	wl_ready("fd %d\n", fd);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	struct stat st;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH) < 0)
		wl_die("fstatat");
	if (!S_ISLNK(st.st_mode))
		wl_fail("the removed symlink's fd is on mode %#o", st.st_mode);
	if (st.st_nlink != 0)
		wl_fail("the removed symlink has %lu links", (unsigned long)st.st_nlink);
	if (!(fcntl(fd, F_GETFL) & O_PATH))
		wl_fail("the symlink's fd lost O_PATH (%#o)", fcntl(fd, F_GETFL));
	char buf[256];
	ssize_t n = readlinkat(fd, "", buf, sizeof(buf) - 1);
	buf[n < 0 ? 0 : n] = 0;
	if (strcmp(buf, TARGET) != 0)
		wl_fail("readlinkat on the removed symlink gives \"%s\" (%s), want \"%s\"", buf, n < 0 ? strerror(errno) : "", TARGET);
	check_gone();
	return wl_finish();
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	const char *kind = argc > 2 ? argv[2] : "";
	keep_name = argc > 3 && strcmp(argv[3], "name-taken") == 0;
	char name[64];
	snprintf(name, sizeof(name), "gk-%s", strcmp(kind, "dev") == 0 ? "null" : strcmp(kind, "symlink") == 0 ? "link" : kind);
	if (argc > 3 && strcmp(argv[3], "in-sub") == 0) {
		/* The test removes DIR/sub after the dump: restore must refuse. */
		char sub[4096];
		wl_path(sub, sizeof(sub), "sub");
		if (mkdir(sub, 0755) < 0)
			wl_die(sub);
		char inner[128];
		snprintf(inner, sizeof(inner), "sub/%s", name);
		wl_path(path, sizeof(path), inner);
	} else
		wl_path(path, sizeof(path), name);
	if (strcmp(kind, "fifo") == 0)
		return fifo();
	if (strcmp(kind, "dir") == 0)
		return dir();
	if (strcmp(kind, "cwd") == 0)
		return cwd();
	if (strcmp(kind, "proccwd") == 0)
		return proccwd();
	if (strcmp(kind, "root") == 0)
		return root();
	if (strcmp(kind, "dev") == 0)
		return dev();
	if (strcmp(kind, "symlink") == 0)
		return symlink_kind();
	fprintf(stderr, "ghostkinds: unknown kind \"%s\"\n", kind);
	return 2;
}
