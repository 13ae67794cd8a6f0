/*
 * chroot: a task chrooted into a subdirectory.
 *
 *   chroot inside   chroot(DIR/root), chdir("/sub"): cwd inside the root
 *   chroot outside  chdir(DIR), chroot("root"): cwd stays outside the
 *                   new root (the classic way out of a chroot)
 *
 * DIR/root/sub/marker and DIR/outside-marker are files only the right
 * root and cwd can reach. The workload reaches DIR through a directory
 * fd (inside) or its cwd (outside). After restore it checks that
 * /sub/marker is there (its root), that its cwd is /sub (inside) or
 * still reaches outside-marker (outside), and that / is not the host's.
 */
#include "workload.h"

#include <sys/stat.h>

static int dirfd_ = -1;

static int check_requested(void)
{
	return faccessat(dirfd_, "check", F_OK, 0) == 0;
}

static void write_result(void)
{
	char res[sizeof(wl_failures) + 16];
	int n = wl_failures[0] ? snprintf(res, sizeof(res), "FAIL: %s\n", wl_failures) : snprintf(res, sizeof(res), "PASS\n");
	int fd = openat(dirfd_, "result.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, res, n) != n || close(fd) < 0 || renameat(dirfd_, "result.tmp", dirfd_, "result") < 0)
		wl_die("write result");
}

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die(path);
	close(fd);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int inside = argc > 2 && strcmp(argv[2], "inside") == 0;
	char path[4096];
	wl_path(path, sizeof(path), "root");
	if (mkdir(path, 0755) < 0)
		wl_die(path);
	wl_path(path, sizeof(path), "root/sub");
	if (mkdir(path, 0755) < 0)
		wl_die(path);
	wl_path(path, sizeof(path), "root/sub/marker");
	touch(path);
	wl_path(path, sizeof(path), "outside-marker");
	touch(path);
	dirfd_ = open(wl_dir, O_RDONLY | O_DIRECTORY);
	if (dirfd_ < 0)
		wl_die(wl_dir);
	if (chdir(wl_dir) < 0 || chroot("root") < 0)
		wl_die("chroot");
	if (inside && chdir("/sub") < 0)
		wl_die("chdir /sub");
	if (access("/sub/marker", F_OK) < 0)
		wl_die("no /sub/marker in the new root");

	/* ready, through the directory fd. */
	int fd = openat(dirfd_, "ready.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, "chrooted\n", 9) != 9 || close(fd) < 0 || renameat(dirfd_, "ready.tmp", dirfd_, "ready") < 0)
		wl_die("write ready");
	while (!check_requested())
		wl_sleep_ms(10);

	if (access("/sub/marker", F_OK) < 0)
		wl_fail("/sub/marker is not in the root: the root is not DIR/root");
	if (access("/bin", F_OK) == 0 || access("/proc", F_OK) == 0)
		wl_fail("/bin or /proc is reachable: the root is the host's");
	if (inside) {
		char cwd[4096];
		if (!getcwd(cwd, sizeof(cwd)) || strcmp(cwd, "/sub") != 0)
			wl_fail("cwd is %s, want /sub", getcwd(cwd, sizeof(cwd)) ? cwd : strerror(errno));
		if (access("marker", F_OK) < 0)
			wl_fail("marker is not in the cwd");
	} else if (access("outside-marker", F_OK) < 0) {
		wl_fail("the cwd outside the root is lost: no outside-marker");
	}
	write_result();
	return wl_failures[0] ? 1 : 0;
}
