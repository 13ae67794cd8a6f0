/*
 * exedeleted: a process whose executable was deleted, or replaced by
 * another file at its path (as a package upgrade does), while it runs.
 *
 *   exedeleted DIR unlink|replace     (run from a copy of the binary)
 *   exedeleted DIR probe              (exits 42 at once: the restored
 *                                      executable still runs)
 *
 * Before the dump it reads its whole executable (a checksum), then
 * unlinks it, or renames a small text file over its path, and forks a
 * child that sleeps.
 *
 * After restore: /proc/self/exe still reads "PATH (deleted)" (for replace,
 * "NAME (deleted)" with another NAME in PATH's directory, as PATH is
 * taken), leads to an
 * unlinked inode of the same size and checksum, the same inode its text
 * mapping maps; executing /proc/self/exe runs the program again; the
 * path stays absent (unlink) or still holds the replacement (replace);
 * the child's /proc/PID/exe is the same inode.
 */
#include "workload.h"

#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>

static const char replacement[] = "replacement of the executable\n";

static unsigned long long exe_sum(off_t *size)
{
	static unsigned char b[1 << 16];
	unsigned long long h = 1469598103934665603ULL;
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		wl_fail("open /proc/self/exe: %s", strerror(errno));
		return 0;
	}
	ssize_t n;
	*size = 0;
	while ((n = read(fd, b, sizeof(b))) > 0) {
		for (ssize_t i = 0; i < n; i++)
			h = (h ^ b[i]) * 1099511628211ULL;
		*size += n;
	}
	close(fd);
	return h;
}

/* text_ino returns the inode the mapping holding main's code maps. */
static unsigned long text_ino(void)
{
	static char maps[1 << 16];
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	size_t got = 0;
	ssize_t n;
	while (got + 1 < sizeof(maps) && (n = read(fd, maps + got, sizeof(maps) - 1 - got)) > 0)
		got += n;
	close(fd);
	maps[got] = 0;
	unsigned long here = (unsigned long)text_ino;
	for (char *l = maps; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		unsigned long s, e, ino;
		if (sscanf(l, "%lx-%lx %*s %*s %*s %lu", &s, &e, &ino) == 3 && s <= here && here < e)
			return ino;
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 2 && strcmp(argv[2], "probe") == 0)
		return 42;
	wl_init(argc, argv);
	int replace = argc > 2 && strcmp(argv[2], "replace") == 0;
	char path[4096];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	if (n <= 0)
		wl_die("readlink /proc/self/exe");
	path[n] = 0;
	off_t size0;
	unsigned long long sum0 = exe_sum(&size0);
	if (replace) {
		char tmp[4200];
		snprintf(tmp, sizeof(tmp), "%s.new", path);
		int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
		if (fd < 0 || write(fd, replacement, sizeof(replacement) - 1) != (ssize_t)sizeof(replacement) - 1 || close(fd) < 0)
			wl_die(tmp);
		if (rename(tmp, path) < 0)
			wl_die("rename over the executable");
	} else if (unlink(path) < 0) {
		wl_die("unlink the executable");
	}
	char want[4200], link[4200];
	snprintf(want, sizeof(want), "%s (deleted)", path);
	n = readlink("/proc/self/exe", link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	if (strcmp(link, want) != 0)
		wl_die("the executable is not deleted");

	/* A child forked from the deleted executable: it has it too. */
	pid_t kid = fork();
	if (kid < 0)
		wl_die("fork");
	if (kid == 0) {
		for (;;)
			pause();
	}
	wl_ready("path %s\nsum %llu\nsize %lld\nkid %d\n", path, sum0, (long long)size0, (int)kid);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	n = readlink("/proc/self/exe", link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	if (!replace && strcmp(link, want) != 0)
		wl_fail("/proc/self/exe reads \"%s\", want \"%s\"", link, want);
	/* The path is taken by the replacement: restore made the file under
	 * another name in the same directory (and unlinked it at once). */
	size_t dl = strrchr(path, '/') - path + 1;
	size_t ln = strlen(link), sl = strlen(" (deleted)");
	if (replace && (strncmp(link, path, dl) != 0 || ln < sl || strcmp(link + ln - sl, " (deleted)") != 0 || strchr(link + dl, '/')))
		wl_fail("/proc/self/exe reads \"%s\", want a deleted file in the directory of %s", link, path);
	struct stat st;
	if (stat("/proc/self/exe", &st) < 0)
		wl_fail("stat /proc/self/exe: %s", strerror(errno));
	else if (st.st_nlink != 0)
		wl_fail("the executable has %lu links, want 0 (an unlinked file)", (unsigned long)st.st_nlink);
	else if (st.st_ino != text_ino())
		wl_fail("the executable is inode %lu, its text mapping inode %lu", (unsigned long)st.st_ino, text_ino());
	off_t size;
	unsigned long long sum = exe_sum(&size);
	if (size != (off_t)wl_saved_num("size") || sum != wl_saved_num("sum"))
		wl_fail("the executable is %lld bytes with checksum %llu, want %lld and %llu", (long long)size, sum,
			(long long)wl_saved_num("size"), wl_saved_num("sum"));
	pid_t pid = fork();
	if (pid == 0) {
		execl("/proc/self/exe", "exedeleted", wl_dir, "probe", (char *)NULL);
		_exit(99);
	}
	int ws = 0;
	if (pid < 0 || waitpid(pid, &ws, 0) != pid || !WIFEXITED(ws) || WEXITSTATUS(ws) != 42)
		wl_fail("executing /proc/self/exe again: wait status %#x, want exit 42", ws);
	/* The child's executable is the same unlinked inode. */
	char kp[64], klink[4200];
	snprintf(kp, sizeof(kp), "/proc/%d/exe", (int)kid);
	n = readlink(kp, klink, sizeof(klink) - 1);
	klink[n > 0 ? n : 0] = 0;
	struct stat kst;
	if (strcmp(klink, link) != 0 || stat(kp, &kst) < 0 || kst.st_ino != st.st_ino)
		wl_fail("the child's executable reads \"%s\" (inode %lu), want \"%s\" (inode %lu)", klink,
			(unsigned long)kst.st_ino, link, (unsigned long)st.st_ino);
	kill(kid, SIGKILL);
	waitpid(kid, NULL, 0);
	char now[256];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (replace) {
		n = fd < 0 ? -1 : read(fd, now, sizeof(now) - 1);
		now[n > 0 ? n : 0] = 0;
		if (strcmp(now, replacement) != 0)
			wl_fail("%s no longer holds its replacement (reads \"%s\")", path, now);
	} else if (fd >= 0) {
		wl_fail("the deleted executable %s is back", path);
	}
	if (fd >= 0)
		close(fd);
	return wl_finish();
}
