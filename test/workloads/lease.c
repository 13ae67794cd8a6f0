/*
 * lease: a read lease on one file and a write lease on another
 * (F_SETLEASE), taken through fds the workload keeps.
 *
 * After restore F_GETLEASE reports both, and the leases still work: a
 * child's non-blocking open for writing of the read-leased file fails
 * with EWOULDBLOCK and the workload gets SIGIO (the lease break).
 */
#include "workload.h"

#include <signal.h>
#include <sys/wait.h>

static volatile sig_atomic_t sigio;

static void on_sigio(int sig)
{
	(void)sig;
	sigio = 1;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char rpath[4096], wpath[4096];
	wl_path(rpath, sizeof(rpath), "read-leased");
	wl_path(wpath, sizeof(wpath), "write-leased");
	wl_write_file("read-leased", "r", 1);
	wl_write_file("write-leased", "w", 1);
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigio;
	if (sigaction(SIGIO, &sa, NULL) < 0)
		wl_die("sigaction");
	int rfd = open(rpath, O_RDONLY);
	int wfd = open(wpath, O_RDWR);
	if (rfd < 0 || wfd < 0)
		wl_die("open");
	if (fcntl(rfd, F_SETLEASE, F_RDLCK) < 0 || fcntl(wfd, F_SETLEASE, F_WRLCK) < 0)
		wl_die("F_SETLEASE");
	wl_ready("rfd %d\nwfd %d\n", rfd, wfd);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	int r = fcntl(rfd, F_GETLEASE), w = fcntl(wfd, F_GETLEASE);
	if (r != F_RDLCK)
		wl_fail("the read lease is %d, want F_RDLCK (%d)", r, F_RDLCK);
	if (w != F_WRLCK)
		wl_fail("the write lease is %d, want F_WRLCK (%d)", w, F_WRLCK);
	pid_t c = fork();
	if (c < 0)
		wl_die("fork");
	if (c == 0) {
		int fd = open(rpath, O_WRONLY | O_NONBLOCK);
		_exit(fd < 0 && errno == EWOULDBLOCK ? 0 : 1);
	}
	int st;
	pid_t got;
	/* The lease break's SIGIO may interrupt the wait. */
	while ((got = waitpid(c, &st, 0)) < 0 && errno == EINTR)
		;
	if (got != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		wl_fail("an open for writing of the read-leased file did not meet the lease");
	for (int i = 0; i < 200 && !sigio; i++)
		wl_sleep_ms(10);
	if (!sigio)
		wl_fail("no SIGIO when the read lease was broken");
	fcntl(rfd, F_SETLEASE, F_UNLCK);
	fcntl(wfd, F_SETLEASE, F_UNLCK);
	return wl_finish();
}
