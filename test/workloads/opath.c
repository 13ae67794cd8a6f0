/*
 * opath: O_PATH fds, which name a file without opening it: one on a
 * regular file, one on a directory, and one taken with O_NOFOLLOW on a
 * symlink (the fd is the link itself, not its target).
 *
 * After restore each fd is still O_PATH and names the same inode; the
 * directory fd still works as the base of openat; the symlink fd is
 * still a symlink whose readlinkat(fd, "") gives the same target.
 */
#include "workload.h"

#include <sys/stat.h>

static void check_fd(const char *what, int fd, unsigned long long ino, mode_t type, int nofollow)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0) {
		wl_fail("%s: F_GETFL: %s", what, strerror(errno));
		return;
	}
	if (!(fl & O_PATH))
		wl_fail("%s: flags %#o lost O_PATH", what, fl);
	if (nofollow && !(fl & O_NOFOLLOW))
		wl_fail("%s: flags %#o lost O_NOFOLLOW", what, fl);
	struct stat st;
	if (fstatat(fd, "", &st, AT_EMPTY_PATH) < 0) {
		wl_fail("%s: fstatat: %s", what, strerror(errno));
		return;
	}
	if ((unsigned long long)st.st_ino != ino || (st.st_mode & S_IFMT) != type)
		wl_fail("%s: inode %llu mode %#o, was inode %llu type %#o", what,
			(unsigned long long)st.st_ino, st.st_mode, ino, type);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char file[4096], dir[4096], link[4096], inner[4096];
	wl_path(file, sizeof(file), "opath-file");
	wl_path(dir, sizeof(dir), "opath-dir");
	wl_path(link, sizeof(link), "opath-link");
	wl_path(inner, sizeof(inner), "opath-dir/inner");
	wl_write_file("opath-file", "data", 4);
	if (mkdir(dir, 0755) < 0 || symlink("target-that-does-not-exist", link) < 0)
		wl_die("mkdir/symlink");
	int ifd = open(inner, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (ifd < 0)
		wl_die(inner);
	close(ifd);

	int ffd = open(file, O_PATH | O_CLOEXEC);
	int dfd = open(dir, O_PATH | O_DIRECTORY);
	int lfd = open(link, O_PATH | O_NOFOLLOW);
	if (ffd < 0 || dfd < 0 || lfd < 0)
		wl_die("open O_PATH");
	struct stat fs, ds, ls;
	if (fstat(ffd, &fs) < 0 || fstat(dfd, &ds) < 0 || fstatat(lfd, "", &ls, AT_EMPTY_PATH) < 0)
		wl_die("fstat");
	if (!S_ISLNK(ls.st_mode)) {
		errno = EINVAL;
		wl_die("the O_NOFOLLOW fd is not a symlink");
	}
	wl_ready("ffd %d\ndfd %d\nlfd %d\nfino %llu\ndino %llu\nlino %llu\n", ffd, dfd, lfd,
		 (unsigned long long)fs.st_ino, (unsigned long long)ds.st_ino, (unsigned long long)ls.st_ino);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	check_fd("O_PATH fd on a file", ffd, wl_saved_num("fino"), S_IFREG, 0);
	check_fd("O_PATH fd on a directory", dfd, wl_saved_num("dino"), S_IFDIR, 0);
	check_fd("O_PATH|O_NOFOLLOW fd on a symlink", lfd, wl_saved_num("lino"), S_IFLNK, 1);
	int fdflags = fcntl(ffd, F_GETFD);
	if (fdflags < 0 || !(fdflags & FD_CLOEXEC))
		wl_fail("the file's O_PATH fd lost FD_CLOEXEC (%d)", fdflags);
	int in = openat(dfd, "inner", O_RDONLY);
	if (in < 0)
		wl_fail("openat through the directory's O_PATH fd: %s", strerror(errno));
	else
		close(in);
	char buf[256];
	ssize_t n = readlinkat(lfd, "", buf, sizeof(buf) - 1);
	if (n < 0)
		wl_fail("readlinkat on the symlink's fd: %s", strerror(errno));
	else {
		buf[n] = 0;
		if (strcmp(buf, "target-that-does-not-exist") != 0)
			wl_fail("the symlink's fd reads \"%s\"", buf);
	}
	if (read(ffd, buf, 1) >= 0 || errno != EBADF)
		wl_fail("read on an O_PATH fd did not fail with EBADF: the fd was opened for reading");
	return wl_finish();
}
