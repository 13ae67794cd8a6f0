/*
 * paths: objects reopened by path at restore, to plant symlinks along.
 *
 *   paths DIR FILE FIFO SOCK
 *
 *   FILE  created if missing with "inside\n", held open O_RDONLY
 *   FIFO  made with mkfifo, held open O_RDWR with "fifo-data" queued
 *   SOCK  a listening unix stream socket bound at that path
 *
 * The parent directory of each is created if missing. After restore each
 * fd must be the object at its path as the task sees it (same inode as a
 * stat of the path), the file must read "inside\n", the FIFO must give
 * back "fifo-data", the socket must still be called SOCK and accept a
 * connection made to SOCK: a restore that opened or bound anything
 * through a symlink planted after the checkpoint, outside the task's
 * root, fails one of these.
 */
#include "workload.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

static void mkparent(const char *path)
{
	char buf[4096];
	snprintf(buf, sizeof(buf), "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = 0;
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			wl_die(buf);
		*p = '/';
	}
}

static int same_inode(int fd, const char *path, const char *what)
{
	struct stat a, b;
	if (fstat(fd, &a) < 0 || stat(path, &b) < 0) {
		wl_fail("%s: stat: %s", what, strerror(errno));
		return 0;
	}
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		wl_fail("%s: fd is inode %lu:%lu, %s is %lu:%lu", what, (unsigned long)a.st_dev,
			(unsigned long)a.st_ino, path, (unsigned long)b.st_dev, (unsigned long)b.st_ino);
		return 0;
	}
	return 1;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc != 5) {
		fprintf(stderr, "usage: paths DIR FILE FIFO SOCK\n");
		return 2;
	}
	const char *file = argv[2], *fifo = argv[3], *sock = argv[4];

	mkparent(file);
	int ffd = open(file, O_RDONLY);
	if (ffd < 0) {
		int w = open(file, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (w < 0 || write(w, "inside\n", 7) != 7 || close(w) < 0)
			wl_die(file);
		ffd = open(file, O_RDONLY);
		if (ffd < 0)
			wl_die(file);
	}

	mkparent(fifo);
	unlink(fifo);
	if (mkfifo(fifo, 0600) < 0)
		wl_die(fifo);
	int pfd = open(fifo, O_RDWR | O_NONBLOCK);
	if (pfd < 0 || write(pfd, "fifo-data", 9) != 9)
		wl_die(fifo);

	mkparent(sock);
	unlink(sock);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
	int lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0)
		wl_die(sock);

	wl_ready("file %d\nfifo %d\nsock %d\n", ffd, pfd, lfd);
	while (!wl_check_requested())
		wl_sleep_ms(20);

	char buf[64] = { 0 };
	ssize_t n = pread(ffd, buf, sizeof(buf) - 1, 0);
	if (n != 7 || memcmp(buf, "inside\n", 7))
		wl_fail("file %s reads %zd bytes \"%s\", want \"inside\\n\"", file, n, n > 0 ? buf : "");
	same_inode(ffd, file, "file");

	memset(buf, 0, sizeof(buf));
	n = read(pfd, buf, sizeof(buf) - 1);
	if (n != 9 || memcmp(buf, "fifo-data", 9))
		wl_fail("FIFO %s gives %zd bytes \"%s\", want \"fifo-data\"", fifo, n, n > 0 ? buf : "");
	same_inode(pfd, fifo, "FIFO");

	struct sockaddr_un got = { 0 };
	socklen_t len = sizeof(got);
	if (getsockname(lfd, (struct sockaddr *)&got, &len) < 0 || strcmp(got.sun_path, sock))
		wl_fail("socket is called \"%s\", want %s", got.sun_path, sock);
	struct stat st;
	if (stat(sock, &st) < 0 || !S_ISSOCK(st.st_mode))
		wl_fail("%s is not a socket file after restore", sock);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		wl_fail("connect to %s: %s", sock, strerror(errno));
	else {
		int a = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);
		if (a < 0)
			wl_fail("the listener did not get the connection made to %s: %s", sock, strerror(errno));
	}
	return wl_finish();
}
