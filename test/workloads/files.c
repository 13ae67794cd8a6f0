/*
 * files: file descriptors and fs state, checked after restore.
 *
 *   fd 3+   DIR/rw.dat O_RDWR at offset 1234
 *   fd 200  dup of it: shares the offset (one open file description)
 *   ...     DIR/rw.dat again, O_RDONLY at offset 77: its own offset
 *   ...     DIR/app.log O_WRONLY|O_APPEND
 *   ...     DIR O_RDONLY|O_DIRECTORY|O_CLOEXEC
 *   ...     /dev/null O_WRONLY|O_NONBLOCK
 *   ...     an eventfd made EFD_CLOEXEC, then FD_CLOEXEC cleared: the
 *           kernel keeps O_CLOEXEC in its file flags, which fdinfo shows
 *   cwd     DIR/cwd, umask 027
 *
 * After restore: the same set of fds is open with the same F_GETFL and
 * F_GETFD flags, offsets and files (dev, inode); a write through fd 200
 * moves both its offset and rw.dat's; an O_APPEND write lands at the end of
 * app.log even if the file grew while the task was dumped; getcwd and the
 * umask are unchanged; stdout's offset went on from where it was.
 */
#include "workload.h"

#include <dirent.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

#define DUP_FD 200

enum { RW, DUP, RO, APP, DIRFD, DEVNULL, STALE, NFDS };
static const char *const names[NFDS] = { "rw", "dup", "ro", "app", "dir", "null", "stale" };
static int fds[NFDS];

static void open_at(int i, const char *path, int flags)
{
	fds[i] = open(path, flags, 0644);
	if (fds[i] < 0)
		wl_die(path);
}

/* fd_list writes the open fd numbers of this process, space separated. */
static void fd_list(char *buf, size_t cap)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		wl_die("opendir /proc/self/fd");
	int self = dirfd(d);
	int present[1024] = { 0 };
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		int fd = atoi(e->d_name);
		if (fd != self && fd < 1024)
			present[fd] = 1;
	}
	closedir(d);
	size_t off = 0;
	buf[0] = 0;
	for (int fd = 0; fd < 1024 && off < cap; fd++)
		if (present[fd])
			off += snprintf(buf + off, cap - off, "%d ", fd);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char path[4200], cwd[4200];
	char dir[4096];
	if (!realpath(wl_dir, dir))
		wl_die("realpath DIR");

	snprintf(path, sizeof(path), "%s/rw.dat", dir);
	open_at(RW, path, O_RDWR | O_CREAT | O_TRUNC);
	char data[8192];
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = 'a' + i % 26;
	if (write(fds[RW], data, sizeof(data)) != sizeof(data))
		wl_die("write rw.dat");
	lseek(fds[RW], 1234, SEEK_SET);
	fds[DUP] = dup2(fds[RW], DUP_FD);
	if (fds[DUP] < 0)
		wl_die("dup2");
	open_at(RO, path, O_RDONLY);
	lseek(fds[RO], 77, SEEK_SET);
	snprintf(path, sizeof(path), "%s/app.log", dir);
	open_at(APP, path, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC);
	if (write(fds[APP], "line1\n", 6) != 6)
		wl_die("write app.log");
	open_at(DIRFD, dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	open_at(DEVNULL, "/dev/null", O_WRONLY);
	fcntl(fds[DEVNULL], F_SETFL, O_NONBLOCK);
	fds[STALE] = eventfd(0, EFD_CLOEXEC);
	if (fds[STALE] < 0 || fcntl(fds[STALE], F_SETFD, 0) < 0)
		wl_die("clear FD_CLOEXEC");

	snprintf(cwd, sizeof(cwd), "%s/cwd", dir);
	if (mkdir(cwd, 0755) < 0 || chdir(cwd) < 0)
		wl_die(cwd);
	int here = open("here.txt", O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (here < 0)
		wl_die("here.txt");
	close(here);
	umask(027);
	wl_printf("files set up\n");

	char saved[4096];
	size_t off = 0;
	for (int i = 0; i < NFDS; i++) {
		struct stat st;
		fstat(fds[i], &st);
		off += snprintf(saved + off, sizeof(saved) - off, "%s %d %#x %d %lld %#lx %lu %#lx\n", names[i], fds[i],
				fcntl(fds[i], F_GETFL), fcntl(fds[i], F_GETFD),
				(long long)lseek(fds[i], 0, SEEK_CUR), (unsigned long)st.st_dev,
				(unsigned long)st.st_ino, (unsigned long)st.st_rdev);
	}
	char fdset[4096];
	fd_list(fdset, sizeof(fdset));
	wl_ready("pid %d\ncwd %s\nstdout_pos %lld\nfds %s\n%s", getpid(), cwd, (long long)lseek(1, 0, SEEK_CUR), fdset,
		 saved);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	/* Offsets before anything below moves them. */
	long long out_pos = lseek(1, 0, SEEK_CUR);
	if (out_pos != (long long)wl_saved_num("stdout_pos"))
		wl_fail("stdout offset is %lld, was %llu", out_pos, wl_saved_num("stdout_pos"));
	char now_set[4096];
	fd_list(now_set, sizeof(now_set));
	const char *want_set = wl_saved("fds");
	if (strncmp(now_set, want_set, strcspn(want_set, "\n")) || strlen(now_set) != strcspn(want_set, "\n"))
		wl_fail("open fds are {%s}, were {%.*s}", now_set, (int)strcspn(want_set, "\n"), want_set);

	for (int i = 0; i < NFDS; i++) {
		const char *v = wl_saved(names[i]);
		int fd, getfd;
		unsigned int fl;
		long long pos;
		unsigned long dev, ino, rdev;
		if (!v || sscanf(v, "%d %x %d %lld %lx %lu %lx", &fd, &fl, &getfd, &pos, &dev, &ino, &rdev) != 7) {
			wl_fail("ready has no line for %s", names[i]);
			continue;
		}
		struct stat st;
		if (fstat(fd, &st) < 0) {
			wl_fail("%s fd %d: fstat: %s", names[i], fd, strerror(errno));
			continue;
		}
		int now_fl = fcntl(fd, F_GETFL), now_fd = fcntl(fd, F_GETFD);
		long long now_pos = lseek(fd, 0, SEEK_CUR);
		if ((unsigned)now_fl != fl)
			wl_fail("%s fd %d: F_GETFL %#x, was %#x", names[i], fd, now_fl, fl);
		if (now_fd != getfd)
			wl_fail("%s fd %d: F_GETFD %d, was %d", names[i], fd, now_fd, getfd);
		if (now_pos != pos)
			wl_fail("%s fd %d: offset %lld, was %lld", names[i], fd, now_pos, pos);
		if (st.st_dev != dev || st.st_ino != ino || st.st_rdev != rdev)
			wl_fail("%s fd %d: file dev %#lx ino %lu rdev %#lx, was %#lx %lu %#lx", names[i], fd,
				(unsigned long)st.st_dev, (unsigned long)st.st_ino, (unsigned long)st.st_rdev, dev,
				ino, rdev);
	}

	/* The dup shares the offset with rw; ro keeps its own. */
	if (write(fds[DUP], "0123456789", 10) != 10)
		wl_fail("write through dup: %s", strerror(errno));
	long long rw_pos = lseek(fds[RW], 0, SEEK_CUR), dup_pos = lseek(fds[DUP], 0, SEEK_CUR),
		  ro_pos = lseek(fds[RO], 0, SEEK_CUR);
	if (rw_pos != 1244 || dup_pos != 1244)
		wl_fail("after a 10-byte write through the dup, offsets are rw %lld dup %lld, want 1244 both", rw_pos,
			dup_pos);
	if (ro_pos != 77)
		wl_fail("a write through the dup moved the separately opened fd to %lld", ro_pos);
	char back[11] = { 0 };
	if (pread(fds[RO], back, 10, 1234) != 10 || strcmp(back, "0123456789"))
		wl_fail("rw.dat reads \"%s\" at 1234 after the write through the dup", back);

	/* O_APPEND writes at the current end, wherever the offset was. */
	struct stat st;
	fstat(fds[APP], &st);
	lseek(fds[APP], 0, SEEK_SET);
	if (write(fds[APP], "line2\n", 6) != 6)
		wl_fail("write app.log: %s", strerror(errno));
	struct stat st2;
	fstat(fds[APP], &st2);
	char tail[7] = { 0 };
	snprintf(path, sizeof(path), "%s/app.log", dir);
	int rd = open(path, O_RDONLY | O_CLOEXEC);
	if (st2.st_size != st.st_size + 6 || pread(rd, tail, 6, st.st_size) != 6 || strcmp(tail, "line2\n"))
		wl_fail("O_APPEND write did not land at the end of app.log (size %lld -> %lld)", (long long)st.st_size,
			(long long)st2.st_size);
	close(rd);

	char now_cwd[4096];
	if (!getcwd(now_cwd, sizeof(now_cwd)))
		wl_fail("getcwd: %s", strerror(errno));
	else if (strncmp(now_cwd, wl_saved("cwd"), strlen(now_cwd)) || wl_saved("cwd")[strlen(now_cwd)] != '\n')
		wl_fail("cwd is %s, was %.*s", now_cwd, (int)strcspn(wl_saved("cwd"), "\n"), wl_saved("cwd"));
	if (access("here.txt", F_OK) < 0)
		wl_fail("here.txt is not found relative to the cwd");
	mode_t old = umask(027);
	if (old != 027)
		wl_fail("umask is %#o, was 027", old);
	struct stat dst;
	if (fstatat(fds[DIRFD], "rw.dat", &dst, 0) < 0)
		wl_fail("fstatat through the directory fd: %s", strerror(errno));
	if (write(fds[DEVNULL], "hello", 5) != 5)
		wl_fail("write /dev/null: %s", strerror(errno));
	return wl_finish();
}
