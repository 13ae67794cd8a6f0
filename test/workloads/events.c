/*
 * events: event fds, epoll, inotify, memfd, an unlinked file and file
 * locks, each with state in flight, checked after restore.
 *
 *   eventfd    count 42; a semaphore eventfd with count 3
 *   epoll      the two eventfds (EPOLLIN, EPOLLIN|EPOLLET) and an idle
 *              one, each with its own data
 *   inotify    watches on DIR/wa (wd 1, then removed) and DIR/wb (wd 2)
 *   signalfd   SIGUSR2, blocked
 *   timerfd    CLOCK_MONOTONIC every 100 ms; CLOCK_REALTIME absolute in
 *              an hour; a one-shot one that expired once and was not read
 *   memfd      "ctcr-events": 10000 bytes, a hole, 4 bytes at 1 MiB,
 *              sealed against shrinking and growing, offset 5555
 *   ghost      DIR/ghost.dat, 20000 bytes, open twice (O_RDWR at 4321,
 *              O_RDONLY|O_APPEND at 100), then unlinked
 *   locks      flock LOCK_EX on DIR/flock.dat, a POSIX write lock on bytes
 *              10-19 of DIR/posix.dat, an OFD read lock on DIR/ofd.dat
 *
 * After restore every one is checked: counts read back, epoll_wait
 * returns the ready targets with their data, inotify reports a file
 * created in DIR/wb with wd 2, signalfd reads a SIGUSR2 sent to itself,
 * the timers keep their interval and time left, the memfd its content,
 * seals, name and offset, the unlinked file its content, offsets, flags
 * and absence from DIR, and a child process finds every lock held.
 */
#include "workload.h"

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <stdint.h>

#define GHOST_SIZE 20000
#define MEMFD_SIZE 10000
#define MEMFD_TAIL (1 << 20)

static int efd, sem, idle, ep, ify, sfd, tfd, tabs, tonce, mfd, g1, g2, lflock, lposix, lofd;
static char dir[4096];

static void path_of(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", dir, name);
}

static int open_in_dir(const char *name, int flags)
{
	char p[4200];
	path_of(p, sizeof(p), name);
	int fd = open(p, flags, 0644);
	if (fd < 0)
		wl_die(p);
	return fd;
}

static unsigned char pattern(size_t i, int salt)
{
	return (unsigned char)(i * 31 + salt + i / 251);
}

static void epoll_add(int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
		wl_die("epoll_ctl");
}

static void setup(void)
{
	efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	uint64_t v = 42;
	if (efd < 0 || write(efd, &v, 8) != 8)
		wl_die("eventfd");
	sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
	idle = eventfd(0, EFD_NONBLOCK);
	if (sem < 0 || idle < 0)
		wl_die("eventfd");

	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		wl_die("epoll_create1");
	epoll_add(efd, EPOLLIN, 0xdeadbeefcafeULL);
	epoll_add(sem, EPOLLIN | EPOLLET, 7);
	epoll_add(idle, EPOLLIN, 9);

	char p[4200];
	ify = inotify_init1(IN_NONBLOCK);
	if (ify < 0)
		wl_die("inotify_init1");
	path_of(p, sizeof(p), "wa");
	mkdir(p, 0755);
	int wa = inotify_add_watch(ify, p, IN_CREATE);
	path_of(p, sizeof(p), "wb");
	mkdir(p, 0755);
	int wb = inotify_add_watch(ify, p, IN_CREATE | IN_CLOSE_WRITE);
	if (wa != 1 || wb != 2)
		wl_die("inotify_add_watch: unexpected descriptors");
	inotify_rm_watch(ify, wa);
	char evbuf[4096];
	while (read(ify, evbuf, sizeof(evbuf)) > 0) /* the IN_IGNORED of wa */
		;

	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sfd = signalfd(-1, &set, SFD_NONBLOCK);
	if (sfd < 0)
		wl_die("signalfd");

	tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec its = { .it_interval = { 0, 100000000 }, .it_value = { 0, 100000000 } };
	if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) < 0)
		wl_die("timerfd");
	tabs = timerfd_create(CLOCK_REALTIME, 0);
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct itimerspec abs = { .it_value = { now.tv_sec + 3600, now.tv_nsec } };
	if (tabs < 0 || timerfd_settime(tabs, TFD_TIMER_ABSTIME, &abs, NULL) < 0)
		wl_die("timerfd abs");
	tonce = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	struct itimerspec once = { .it_value = { 0, 1000 } };
	if (tonce < 0 || timerfd_settime(tonce, 0, &once, NULL) < 0)
		wl_die("timerfd once");

	mfd = memfd_create("ctcr-events", MFD_ALLOW_SEALING);
	if (mfd < 0)
		wl_die("memfd_create");
	unsigned char buf[GHOST_SIZE];
	for (size_t i = 0; i < MEMFD_SIZE; i++)
		buf[i] = pattern(i, 1);
	if (write(mfd, buf, MEMFD_SIZE) != MEMFD_SIZE || pwrite(mfd, "tail", 4, MEMFD_TAIL) != 4)
		wl_die("write memfd");
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		wl_die("F_ADD_SEALS");
	lseek(mfd, 5555, SEEK_SET);

	g1 = open_in_dir("ghost.dat", O_RDWR | O_CREAT | O_TRUNC);
	for (size_t i = 0; i < GHOST_SIZE; i++)
		buf[i] = pattern(i, 2);
	if (write(g1, buf, GHOST_SIZE) != GHOST_SIZE)
		wl_die("write ghost");
	lseek(g1, 4321, SEEK_SET);
	g2 = open_in_dir("ghost.dat", O_RDONLY | O_APPEND);
	lseek(g2, 100, SEEK_SET);
	path_of(p, sizeof(p), "ghost.dat");
	if (unlink(p) < 0)
		wl_die("unlink ghost.dat");

	lflock = open_in_dir("flock.dat", O_RDWR | O_CREAT);
	if (flock(lflock, LOCK_EX) < 0)
		wl_die("flock");
	lposix = open_in_dir("posix.dat", O_RDWR | O_CREAT);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 10 };
	if (fcntl(lposix, F_SETLK, &fl) < 0)
		wl_die("F_SETLK");
	lofd = open_in_dir("ofd.dat", O_RDWR | O_CREAT);
	struct flock ofl = { .l_type = F_RDLCK, .l_whence = SEEK_SET };
	if (fcntl(lofd, F_OFD_SETLK, &ofl) < 0)
		wl_die("F_OFD_SETLK");

	wl_sleep_ms(20); /* tonce expires, unread */
}

static void check_eventfds_and_epoll(void)
{
	struct epoll_event evs[8];
	int n = epoll_wait(ep, evs, 8, 0);
	int seen_efd = 0, seen_sem = 0;
	for (int i = 0; i < n; i++) {
		if (evs[i].data.u64 == 0xdeadbeefcafeULL && evs[i].events == EPOLLIN)
			seen_efd++;
		else if (evs[i].data.u64 == 7 && evs[i].events == EPOLLIN)
			seen_sem++;
		else
			wl_fail("epoll_wait returned events %#x data %#llx, which no ready target has", evs[i].events,
				(unsigned long long)evs[i].data.u64);
	}
	if (n < 0 || seen_efd != 1 || seen_sem != 1)
		wl_fail("epoll_wait returned %d events (%s), want the eventfd (data 0xdeadbeefcafe) and the semaphore (data 7)",
			n, n < 0 ? strerror(errno) : "");
	/* Edge-triggered: the semaphore is not reported again until it changes. */
	n = epoll_wait(ep, evs, 8, 0);
	if (n != 1 || evs[0].data.u64 != 0xdeadbeefcafeULL)
		wl_fail("second epoll_wait returned %d events, want only the level-triggered eventfd", n);
	/* The idle eventfd is registered: a write makes it ready with its data. */
	uint64_t one = 1;
	if (write(idle, &one, 8) != 8)
		wl_fail("write idle eventfd: %s", strerror(errno));
	n = epoll_wait(ep, evs, 8, 0);
	int seen_idle = 0;
	for (int i = 0; i < n; i++)
		seen_idle += evs[i].data.u64 == 9;
	if (!seen_idle)
		wl_fail("the idle eventfd made ready after restore is not reported by epoll (data 9)");

	uint64_t v = 0;
	if (read(efd, &v, 8) != 8 || v != 42)
		wl_fail("eventfd reads %llu (%s), want 42", (unsigned long long)v, strerror(errno));
	for (int i = 0; i < 3; i++) {
		v = 0;
		if (read(sem, &v, 8) != 8 || v != 1)
			wl_fail("semaphore eventfd read %d gives %llu (%s), want 1", i, (unsigned long long)v, strerror(errno));
	}
	if (read(sem, &v, 8) != -1 || errno != EAGAIN)
		wl_fail("semaphore eventfd readable a 4th time: its count was 3 (or it lost O_NONBLOCK)");
	if (!(fcntl(efd, F_GETFD) & FD_CLOEXEC) || (fcntl(sem, F_GETFD) & FD_CLOEXEC))
		wl_fail("eventfd FD_CLOEXEC flags changed");
}

static void check_inotify(void)
{
	char p[4200], buf[4096];
	while (read(ify, buf, sizeof(buf)) > 0) /* nothing should be queued */
		wl_fail("inotify had events queued before anything was touched after restore");
	path_of(p, sizeof(p), "wb/after");
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die(p);
	close(fd);
	path_of(p, sizeof(p), "wa/ignored");
	fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	close(fd);
	ssize_t n = read(ify, buf, sizeof(buf));
	int created = 0, closed = 0;
	for (ssize_t off = 0; n > 0 && off < n;) {
		struct inotify_event *ev = (struct inotify_event *)(buf + off);
		if (ev->wd != 2 || strcmp(ev->name, "after"))
			wl_fail("inotify event wd %d mask %#x name %s, want wd 2 for \"after\"", ev->wd, ev->mask,
				ev->len ? ev->name : "");
		created += (ev->mask & IN_CREATE) != 0;
		closed += (ev->mask & IN_CLOSE_WRITE) != 0;
		off += sizeof(*ev) + ev->len;
	}
	if (created != 1 || closed != 1)
		wl_fail("inotify reported %d IN_CREATE and %d IN_CLOSE_WRITE for a file made in the watched dir, want 1 and 1 (read: %s)",
			created, closed, n < 0 ? strerror(errno) : "ok");
}

static void check_signalfd(void)
{
	struct signalfd_siginfo si;
	if (read(sfd, &si, sizeof(si)) != -1 || errno != EAGAIN)
		wl_fail("signalfd readable before a signal was sent");
	kill(getpid(), SIGUSR2);
	memset(&si, 0, sizeof(si));
	if (read(sfd, &si, sizeof(si)) != sizeof(si) || si.ssi_signo != SIGUSR2)
		wl_fail("signalfd gives signal %u (%s) after SIGUSR2 was sent", si.ssi_signo, strerror(errno));
}

static void check_timers(void)
{
	struct itimerspec its;
	if (timerfd_gettime(tfd, &its) < 0 || its.it_interval.tv_sec != 0 || its.it_interval.tv_nsec != 100000000)
		wl_fail("periodic timerfd interval is %ld.%09ld, want 0.1", (long)its.it_interval.tv_sec,
			its.it_interval.tv_nsec);
	uint64_t ticks = 0;
	if (read(tfd, &ticks, 8) != 8 || ticks < 1)
		wl_fail("periodic timerfd reads %llu expirations (%s) after restore, want the one left unread before the dump",
			(unsigned long long)ticks, strerror(errno));
	double t0 = wl_now();
	int expirations = 0;
	while (wl_now() - t0 < 1.0) {
		struct pollfd pfd = { .fd = tfd, .events = POLLIN };
		if (poll(&pfd, 1, 300) == 1 && read(tfd, &ticks, 8) == 8)
			expirations += ticks;
		else if (wl_now() - t0 < 1.0)
			break;
	}
	if (expirations < 8 || expirations > 12)
		wl_fail("periodic timerfd expired %d times in a second, want about 10", expirations);

	if (timerfd_gettime(tabs, &its) < 0 || its.it_value.tv_sec < 3000 || its.it_value.tv_sec > 3600 ||
	    its.it_interval.tv_sec || its.it_interval.tv_nsec)
		wl_fail("absolute timerfd has %ld s left (interval %ld), want just under 3600", (long)its.it_value.tv_sec,
			(long)its.it_interval.tv_sec);
	if (fcntl(tabs, F_GETFL) & O_NONBLOCK)
		wl_fail("blocking timerfd became non-blocking");

	if (read(tonce, &ticks, 8) != 8 || ticks != 1)
		wl_fail("one-shot timerfd that expired before the dump reads %s, want 1 expiration",
			errno == EAGAIN ? "nothing" : strerror(errno));
}

static void check_memfd(void)
{
	char link[256] = { 0 }, p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", mfd);
	if (readlink(p, link, sizeof(link) - 1) < 0 || strncmp(link, "/memfd:ctcr-events", 18))
		wl_fail("memfd is %s, want /memfd:ctcr-events", link);
	if (lseek(mfd, 0, SEEK_CUR) != 5555)
		wl_fail("memfd offset %lld, want 5555", (long long)lseek(mfd, 0, SEEK_CUR));
	struct stat st;
	fstat(mfd, &st);
	if (st.st_size != MEMFD_TAIL + 4)
		wl_fail("memfd size %lld, want %d", (long long)st.st_size, MEMFD_TAIL + 4);
	static unsigned char buf[MEMFD_TAIL + 4];
	if (pread(mfd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf))
		wl_fail("read memfd: %s", strerror(errno));
	size_t bad = 0;
	for (size_t i = 0; i < MEMFD_SIZE; i++)
		bad += buf[i] != pattern(i, 1);
	for (size_t i = MEMFD_SIZE; i < MEMFD_TAIL; i++)
		bad += buf[i] != 0;
	if (bad || memcmp(buf + MEMFD_TAIL, "tail", 4))
		wl_fail("memfd content differs in %zu bytes", bad);
	int seals = fcntl(mfd, F_GET_SEALS);
	if (seals != (F_SEAL_SHRINK | F_SEAL_GROW))
		wl_fail("memfd seals %#x, want %#x", seals, F_SEAL_SHRINK | F_SEAL_GROW);
	if (ftruncate(mfd, 10) == 0)
		wl_fail("a sealed memfd could be shrunk");
	if (pwrite(mfd, "X", 1, 3) != 1)
		wl_fail("memfd is not writable within its size: %s", strerror(errno));
}

static void check_ghost(void)
{
	char p[4200];
	path_of(p, sizeof(p), "ghost.dat");
	if (access(p, F_OK) == 0 || errno != ENOENT)
		wl_fail("the unlinked ghost.dat is back in DIR");
	struct stat s1, s2;
	fstat(g1, &s1);
	fstat(g2, &s2);
	if (s1.st_nlink != 0 || s1.st_ino != s2.st_ino || s1.st_size != GHOST_SIZE || (s1.st_mode & 07777) != 0644)
		wl_fail("unlinked file: nlink %lu, inodes %lu/%lu, size %lld, mode %#o: want 0 links, one inode, %d bytes, 0644",
			(unsigned long)s1.st_nlink, (unsigned long)s1.st_ino, (unsigned long)s2.st_ino,
			(long long)s1.st_size, s1.st_mode & 07777, GHOST_SIZE);
	if (lseek(g1, 0, SEEK_CUR) != 4321 || lseek(g2, 0, SEEK_CUR) != 100)
		wl_fail("unlinked file offsets %lld and %lld, want 4321 and 100", (long long)lseek(g1, 0, SEEK_CUR),
			(long long)lseek(g2, 0, SEEK_CUR));
	if ((fcntl(g1, F_GETFL) & (O_ACCMODE | O_APPEND)) != O_RDWR ||
	    (fcntl(g2, F_GETFL) & (O_ACCMODE | O_APPEND)) != (O_RDONLY | O_APPEND))
		wl_fail("unlinked file flags %#x and %#x", fcntl(g1, F_GETFL), fcntl(g2, F_GETFL));
	static unsigned char buf[GHOST_SIZE];
	if (pread(g2, buf, GHOST_SIZE, 0) != GHOST_SIZE)
		wl_fail("read unlinked file: %s", strerror(errno));
	size_t bad = 0;
	for (size_t i = 0; i < GHOST_SIZE; i++)
		bad += buf[i] != pattern(i, 2);
	if (bad)
		wl_fail("unlinked file content differs in %zu bytes", bad);
	/* One inode behind both fds: a write through one shows in the other. */
	if (write(g1, "ZZ", 2) != 2 || pread(g2, buf, 2, 4321) != 2 || memcmp(buf, "ZZ", 2))
		wl_fail("a write through one fd of the unlinked file does not show through the other");
}

/* check_locks forks a child that tries to take every lock. */
static void check_locks(void)
{
	pid_t self = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		int code = 0;
		int fd = open_in_dir("flock.dat", O_RDWR);
		if (flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)
			code |= 1;
		fd = open_in_dir("posix.dat", O_RDWR);
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
		if (fcntl(fd, F_GETLK, &fl) < 0 || fl.l_type != F_WRLCK || fl.l_start != 10 || fl.l_len != 10 ||
		    fl.l_pid != self)
			code |= 2;
		fd = open_in_dir("ofd.dat", O_RDWR);
		struct flock ofl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
		if (fcntl(fd, F_OFD_GETLK, &ofl) < 0 || ofl.l_type != F_RDLCK)
			code |= 4;
		_exit(code);
	}
	int st = 0;
	if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) {
		wl_fail("lock checker did not run: %s", strerror(errno));
		return;
	}
	int code = WEXITSTATUS(st);
	if (code & 1)
		wl_fail("another process could take the flock on flock.dat");
	if (code & 2)
		wl_fail("F_GETLK from another process does not see the POSIX write lock on bytes 10-19 of posix.dat held by %d", self);
	if (code & 4)
		wl_fail("F_OFD_GETLK from another process does not see the OFD read lock on ofd.dat");
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (!realpath(wl_dir, dir))
		wl_die("realpath DIR");
	setup();
	/* Let the periodic timerfd expire unread: the dump then always meets
	 * it in the state the kernel shows as it_value 0 and ticks 1 (it is
	 * re-armed, and its overruns counted, only by read). */
	wl_sleep_ms(250);
	wl_ready("pid %d\n", getpid());
	while (!wl_check_requested())
		wl_sleep_ms(10);
	check_eventfds_and_epoll();
	check_inotify();
	check_signalfd();
	check_timers();
	check_memfd();
	check_ghost();
	check_locks();
	return wl_finish();
}
