/*
 * nestedfiles: files reached through a nested mount namespace's own view,
 * as a systemd service with PrivateTmp= holds them in its /tmp.
 *
 *   nestedfiles DIR
 *
 * The root A stays in ctcr's mount namespace. Its child X makes a mount
 * namespace of its own, mounts a tmpfs over DIR/priv (PrivateTmp= mounts
 * one over /tmp) and binds the tmpfs's directory inner over DIR/bound.
 * In X's view, X then holds:
 *   - DIR/priv/data open O_RDWR, written, at offset 5; the same open
 *     file description is passed to A (SCM_RIGHTS), which holds it too;
 *   - DIR/bound/map mapped MAP_SHARED read-write, written through the
 *     mapping;
 *   - its cwd in DIR/bound/wd;
 *   - DIR/priv/gone open after it was unlinked;
 *   - the FIFO DIR/priv/fifo open read-write with bytes queued.
 * A's view has other files at DIR/priv/data, DIR/bound/map and
 * DIR/bound/wd/mark; once X is made, A maps its own DIR/bound/map
 * (MAP_PRIVATE, read-only) and has its cwd in its own DIR/bound/wd: the
 * same paths as X's, other files (a dump must look each up in its own
 * task's view, never reuse what it found for the other).
 *
 *   nestedfiles DIR sock
 *
 * The same, and X also listens on a unix socket bound to DIR/priv/sock,
 * a name of its own view, which it connects to at the check.
 *
 * After DIR/check X checks that its files are those of its own view (the
 * tmpfs's device), their content, the offset, that a write through the
 * mapping reaches the file of its view, its cwd, the unlinked file, the
 * FIFO's bytes, into DIR/res-x; A then checks that its own files are
 * untouched, that no name was left in its DIR/priv, and that its copy of
 * X's descriptor is X's file at X's offset.
 */
#include "workload.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/wait.h>
#include <dirent.h>

#define TMPFS_MAGIC 0x01021994
#define MAPSZ 4096

static const char x_data[] = "x-data-0123456789";
static const char x_map[] = "x-map-before";
static const char x_map_after[] = "x-map-after!";
static const char x_mark[] = "x-mark";
static const char x_gone[] = "x-gone";
static const char x_fifo[] = "x-fifo";
static const char root_data[] = "root-data";
static const char root_mark[] = "root-mark";

static char priv[1024], bound[1024];

static void must(int ok, const char *what)
{
	if (!ok)
		wl_die(what);
}

static void at(char *buf, const char *dir, const char *name)
{
	snprintf(buf, 4096, "%s/%s", dir, name);
}

static void put(const char *path, const char *data, size_t len, int flags)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | flags, 0644);
	must(fd >= 0 && write(fd, data, len) == (ssize_t)len, path);
	close(fd);
}

/* check_content fails unless path holds want at offset 0. */
static void check_content(const char *who, const char *path, const char *want)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		wl_fail("%s: %s: %s", who, path, strerror(errno));
		return;
	}
	ssize_t n = pread(fd, buf, strlen(want), 0);
	close(fd);
	if (n != (ssize_t)strlen(want) || memcmp(buf, want, n) != 0)
		wl_fail("%s: %s holds \"%.*s\", want \"%s\"", who, path, (int)(n > 0 ? n : 0), buf, want);
}

static void send_fd(int sock, int fd)
{
	char c = 'f';
	struct iovec iov = { &c, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &fd, sizeof(int));
	must(sendmsg(sock, &msg, 0) == 1, "sendmsg");
}

static int recv_fd(int sock)
{
	char c;
	struct iovec iov = { &c, 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	must(recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) == 1, "recvmsg");
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
	must(cm && cm->cmsg_type == SCM_RIGHTS, "no fd received");
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	return fd;
}

/* --- X, in its own mount namespace --- */

static int data_fd = -1, gone_fd = -1, fifo_fd = -1, listener = -1;
static int with_sock;

static struct sockaddr_un sock_addr(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	size_t n = strlen(priv);
	if (n + sizeof("/sock") > sizeof(a.sun_path)) {
		errno = ENAMETOOLONG;
		wl_die(priv);
	}
	memcpy(a.sun_path, priv, n);
	memcpy(a.sun_path + n, "/sock", sizeof("/sock"));
	return a;
}
static char *map;

static void make_x(int sock)
{
	char p[4096], q[4096];
	must(unshare(CLONE_NEWNS) == 0, "unshare(CLONE_NEWNS)");
	must(mount("none", "/", NULL, MS_REC | MS_SLAVE, NULL) == 0, "make / a slave");
	must(mount("tmpfs", priv, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755") == 0, "mount tmpfs");
	at(p, priv, "inner");
	must(mkdir(p, 0755) == 0, p);
	must(mount(p, bound, NULL, MS_BIND, NULL) == 0, "bind DIR/priv/inner on DIR/bound");

	at(p, priv, "data");
	data_fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	must(data_fd >= 0 && write(data_fd, x_data, strlen(x_data)) == (ssize_t)strlen(x_data), p);
	must(lseek(data_fd, 5, SEEK_SET) == 5, "lseek");
	send_fd(sock, data_fd);

	at(p, bound, "map");
	int fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	must(fd >= 0 && ftruncate(fd, MAPSZ) == 0, p);
	map = mmap(NULL, MAPSZ, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	must(map != MAP_FAILED, "mmap");
	close(fd);
	memcpy(map, x_map, strlen(x_map));

	at(p, bound, "wd");
	must(mkdir(p, 0755) == 0, p);
	at(q, bound, "wd/mark");
	put(q, x_mark, strlen(x_mark), 0);
	must(chdir(p) == 0, "chdir DIR/bound/wd");

	at(p, priv, "gone");
	gone_fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	must(gone_fd >= 0 && write(gone_fd, x_gone, strlen(x_gone)) == (ssize_t)strlen(x_gone), p);
	must(unlink(p) == 0, "unlink DIR/priv/gone");

	at(p, priv, "fifo");
	must(mkfifo(p, 0600) == 0, p);
	fifo_fd = open(p, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	must(fifo_fd >= 0 && write(fifo_fd, x_fifo, strlen(x_fifo)) == (ssize_t)strlen(x_fifo), p);

	if (with_sock) {
		struct sockaddr_un a = sock_addr();
		listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		must(listener >= 0 && bind(listener, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(listener, 4) == 0, a.sun_path);
	}
}

static void check_x(void)
{
	const char *who = "X";
	char p[4096], buf[64] = "";
	struct stat tmpfs, st;
	struct statfs sf;
	if (statfs(priv, &sf) != 0 || sf.f_type != TMPFS_MAGIC) {
		wl_fail("%s: %s is not its tmpfs any more", who, priv);
		return;
	}
	must(stat(priv, &tmpfs) == 0, priv);
	if (stat(bound, &st) != 0 || st.st_dev != tmpfs.st_dev)
		wl_fail("%s: %s is not the bind of its tmpfs's inner directory", who, bound);

	/* The fd: its view's file, content and offset. */
	if (fstat(data_fd, &st) != 0 || st.st_dev != tmpfs.st_dev)
		wl_fail("%s: fd %d is not on its tmpfs (dev %lx, want %lx)", who, data_fd, (long)st.st_dev, (long)tmpfs.st_dev);
	off_t off = lseek(data_fd, 0, SEEK_CUR);
	if (off != 5)
		wl_fail("%s: fd %d at offset %ld, want 5", who, data_fd, (long)off);
	ssize_t n = pread(data_fd, buf, strlen(x_data), 0);
	if (n != (ssize_t)strlen(x_data) || memcmp(buf, x_data, n) != 0)
		wl_fail("%s: fd %d reads \"%.*s\", want \"%s\"", who, data_fd, (int)(n > 0 ? n : 0), buf, x_data);
	if (pwrite(data_fd, "W", 1, 40) != 1)
		wl_fail("%s: write through fd %d: %s", who, data_fd, strerror(errno));
	at(p, priv, "data");
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, buf, 1, 40) != 1 || buf[0] != 'W')
		wl_fail("%s: the write through fd %d is not in its view's %s", who, data_fd, p);
	if (fd >= 0)
		close(fd);

	/* The mapping: its content, and writes through it land in the file. */
	if (memcmp(map, x_map, strlen(x_map)) != 0)
		wl_fail("%s: the mapping holds \"%.12s\", want \"%s\"", who, map, x_map);
	memcpy(map, x_map_after, strlen(x_map_after));
	if (msync(map, MAPSZ, MS_SYNC) != 0)
		wl_fail("%s: msync: %s", who, strerror(errno));
	at(p, bound, "map");
	check_content(who, p, x_map_after);
	at(p, priv, "inner/map");
	check_content(who, p, x_map_after);

	/* The cwd. */
	at(p, bound, "wd");
	struct stat wd;
	if (stat(".", &st) != 0 || stat(p, &wd) != 0 || st.st_dev != wd.st_dev || st.st_ino != wd.st_ino)
		wl_fail("%s: cwd is not %s of its view", who, p);
	check_content(who, "mark", x_mark);

	/* The unlinked file, made again on its tmpfs. */
	memset(buf, 0, sizeof(buf));
	n = pread(gone_fd, buf, sizeof(buf) - 1, 0);
	if (n != (ssize_t)strlen(x_gone) || strcmp(buf, x_gone) != 0)
		wl_fail("%s: the unlinked file reads \"%s\", want \"%s\"", who, buf, x_gone);
	if (fstat(gone_fd, &st) != 0 || st.st_nlink != 0 || st.st_dev != tmpfs.st_dev)
		wl_fail("%s: the unlinked file has %ld links, dev %lx (its tmpfs: %lx)", who, (long)st.st_nlink, (long)st.st_dev, (long)tmpfs.st_dev);

	/* The FIFO of its view and its bytes. */
	memset(buf, 0, sizeof(buf));
	n = read(fifo_fd, buf, sizeof(buf) - 1);
	if (n != (ssize_t)strlen(x_fifo) || strcmp(buf, x_fifo) != 0)
		wl_fail("%s: the FIFO gives \"%s\" (%zd), want \"%s\"", who, buf, n, x_fifo);
	at(p, priv, "fifo");
	if (fstat(fifo_fd, &st) != 0 || st.st_dev != tmpfs.st_dev)
		wl_fail("%s: the FIFO is not its tmpfs's %s", who, p);

	if (with_sock) {
		struct sockaddr_un a = sock_addr();
		int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) != 0)
			wl_fail("%s: connect to its listener at %s: %s", who, a.sun_path, strerror(errno));
		if (c >= 0)
			close(c);
	}
}

/* --- A, in ctcr's mount namespace --- */

static char *a_map;

static void check_a(int shared_fd)
{
	const char *who = "A";
	char p[4096], buf[64] = "";
	struct stat st, dir;
	if (memcmp(a_map, "root-map", 8) != 0)
		wl_fail("%s: its mapping of its DIR/bound/map reads \"%.8s\", want \"root-map\"", who, a_map);
	check_content(who, "mark", root_mark);
	at(p, priv, "data");
	check_content(who, p, root_data);
	struct stat own;
	if (stat(p, &own) == 0 && own.st_size != (off_t)strlen(root_data))
		wl_fail("%s: its %s is %ld bytes, want %zu", who, p, (long)own.st_size, strlen(root_data));
	at(p, bound, "map");
	check_content(who, p, "root-map");
	at(p, bound, "wd/mark");
	check_content(who, p, root_mark);

	/* Nothing of X's view was made in A's DIR/priv. */
	DIR *d = opendir(priv);
	if (!d) {
		wl_fail("%s: %s: %s", who, priv, strerror(errno));
	} else {
		struct dirent *e;
		while ((e = readdir(d)))
			if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "data"))
				wl_fail("%s: %s holds %s, a name of X's view", who, priv, e->d_name);
		closedir(d);
	}

	/* Its copy of X's descriptor: X's file, at X's offset. */
	must(stat(priv, &dir) == 0, priv);
	if (fstat(shared_fd, &st) != 0 || st.st_dev == dir.st_dev)
		wl_fail("%s: fd %d of X's file is on its own view's file system", who, shared_fd);
	ssize_t n = pread(shared_fd, buf, strlen(x_data), 0);
	if (n != (ssize_t)strlen(x_data) || memcmp(buf, x_data, n) != 0)
		wl_fail("%s: fd %d of X's file reads \"%.*s\", want \"%s\"", who, shared_fd, (int)(n > 0 ? n : 0), buf, x_data);
	off_t off = lseek(shared_fd, 0, SEEK_CUR);
	if (off != 5)
		wl_fail("%s: fd %d of X's file at offset %ld, want 5 (X's)", who, shared_fd, (long)off);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	with_sock = argc > 2 && strcmp(argv[2], "sock") == 0;
	char p[4096], q[4096];
	if (strlen(wl_dir) > 900) {
		errno = ENAMETOOLONG;
		wl_die(wl_dir);
	}
	snprintf(priv, sizeof(priv), "%s/priv", wl_dir);
	snprintf(bound, sizeof(bound), "%s/bound", wl_dir);
	must(mkdir(priv, 0755) == 0, priv);
	must(mkdir(bound, 0755) == 0, bound);
	at(p, priv, "data");
	put(p, root_data, strlen(root_data), 0);
	at(p, bound, "map");
	char rmap[MAPSZ];
	memset(rmap, 'R', sizeof(rmap));
	memcpy(rmap, "root-map", 8);
	put(p, rmap, sizeof(rmap), 0);
	at(p, bound, "wd");
	must(mkdir(p, 0755) == 0, p);
	at(q, bound, "wd/mark");
	put(q, root_mark, strlen(root_mark), 0);

	int sk[2];
	must(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sk) == 0, "socketpair");
	pid_t x = fork();
	must(x >= 0, "fork");
	if (x == 0) {
		/* Gone with its parent if a test ends early; kept across restore. */
		must(prctl(PR_SET_PDEATHSIG, SIGKILL) == 0, "PR_SET_PDEATHSIG");
		close(sk[0]);
		make_x(sk[1]);
		close(sk[1]);
		wl_write_file("ready-x", "1", 1);
		while (!wl_check_requested())
			wl_sleep_ms(20);
		check_x();
		const char *out = wl_failures[0] ? wl_failures : "PASS";
		wl_write_file("res-x", out, strlen(out));
		exit(wl_failures[0] ? 1 : 0);
	}
	close(sk[1]);
	int shared_fd = recv_fd(sk[0]);
	close(sk[0]);
	wl_wait_file("ready-x");
	at(p, bound, "map");
	int mfd = open(p, O_RDONLY | O_CLOEXEC);
	must(mfd >= 0, p);
	a_map = mmap(NULL, MAPSZ, PROT_READ, MAP_PRIVATE, mfd, 0);
	must(a_map != MAP_FAILED, "mmap A's DIR/bound/map");
	close(mfd);
	at(p, bound, "wd");
	must(chdir(p) == 0, "chdir A's DIR/bound/wd");
	wl_ready("x %d\n", x);
	while (!wl_check_requested())
		wl_sleep_ms(20);

	wl_wait_file("res-x");
	char buf[4096];
	if (wl_read_file("res-x", buf, sizeof(buf)) < 0 || strcmp(buf, "PASS") != 0)
		wl_fail("%s", buf);
	check_a(shared_fd);
	int st;
	while (wait(&st) > 0 || errno == EINTR)
		;
	return wl_finish();
}
