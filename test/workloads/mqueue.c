/*
 * mqueue: POSIX message queues with messages of several priorities, and
 * descriptors kept open on them.
 *
 *   mqueue DIR PREFIX [notify]
 *
 * Sets up, before DIR/ready (PREFIX is "/name-" or so: the queues are
 * PREFIXa and PREFIXb):
 *   - queue a: maxmsg 8, msgsize 64, mode 0640, four messages sent in
 *     the order low-1 (prio 1), high (7), low-2 (1), mid (3): it hands
 *     them out as high, mid, low-1, low-2. Kept open twice: O_RDWR |
 *     O_NONBLOCK, and O_RDONLY (blocking);
 *   - queue b: maxmsg 5, msgsize 128, mode 0604, owner 1000:1001, three
 *     messages (one of 100 bytes), then closed: only its name holds it;
 *   - with "notify", queue n (empty) with an mq_notify(SIGUSR2)
 *     registration, which a checkpoint must refuse.
 * After restore (DIR/check) it verifies both queues' attributes, owner,
 * mode and messages in order, the kept descriptors' access modes and
 * O_NONBLOCK, that the O_RDWR one still sends and receives, that no
 * SIGUSR2 arrived; then it removes the queues.
 */
#include "workload.h"

#include <mqueue.h>
#include <signal.h>
#include <sys/stat.h>

static volatile sig_atomic_t notified;

static void on_usr2(int sig)
{
	(void)sig;
	notified++;
}

static void must(int ok, const char *what)
{
	if (!ok)
		wl_die(what);
}

struct msg {
	const char *data;
	unsigned prio;
};

static char big[101];

static void expect_queue(mqd_t q, const char *name, long maxmsg, long msgsize, const struct msg *want, int n)
{
	struct mq_attr a;
	if (mq_getattr(q, &a) != 0) {
		wl_fail("%s: mq_getattr: %s", name, strerror(errno));
		return;
	}
	if (a.mq_maxmsg != maxmsg || a.mq_msgsize != msgsize || a.mq_curmsgs != n)
		wl_fail("%s: maxmsg %ld msgsize %ld curmsgs %ld, want %ld %ld %d", name, a.mq_maxmsg, a.mq_msgsize, a.mq_curmsgs, maxmsg, msgsize, n);
	char buf[256];
	/* Never more receives than messages: a descriptor that lost
	 * O_NONBLOCK would block on an empty queue. */
	for (int i = 0; i < n && i < a.mq_curmsgs; i++) {
		unsigned prio = 0;
		ssize_t got = mq_receive(q, buf, sizeof(buf), &prio);
		if (got < 0) {
			wl_fail("%s: message %d: %s", name, i, strerror(errno));
			return;
		}
		size_t len = strlen(want[i].data);
		if ((size_t)got != len || memcmp(buf, want[i].data, len) != 0 || prio != want[i].prio) {
			buf[got < 40 ? got : 40] = 0;
			wl_fail("%s: message %d is \"%s\" (%zd bytes) at priority %u, want \"%.40s\" (%zu bytes) at %u", name, i, buf, got, prio, want[i].data, len, want[i].prio);
		}
	}
}

static void expect_file(const char *name, mode_t mode, uid_t uid, gid_t gid)
{
	char path[512];
	snprintf(path, sizeof(path), "/dev/mqueue%s", name);
	struct stat st;
	/* Not every host mounts /dev/mqueue; a container has it. */
	if (stat("/dev/mqueue", &st) != 0)
		return;
	if (stat(path, &st) != 0) {
		wl_fail("%s: %s", path, strerror(errno));
		return;
	}
	if ((st.st_mode & 07777) != mode || st.st_uid != uid || st.st_gid != gid)
		wl_fail("%s: mode %o owner %u:%u, want %o %u:%u", path, st.st_mode & 07777, st.st_uid, st.st_gid, mode, uid, gid);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3) {
		fprintf(stderr, "usage: mqueue DIR PREFIX [notify]\n");
		return 2;
	}
	const char *prefix = argv[2];
	int with_notify = argc > 3 && strcmp(argv[3], "notify") == 0;
	char na[256], nb[256], nn[256];
	snprintf(na, sizeof(na), "%sa", prefix);
	snprintf(nb, sizeof(nb), "%sb", prefix);
	snprintf(nn, sizeof(nn), "%sn", prefix);
	memset(big, 'x', 100);
	signal(SIGUSR2, on_usr2);
	umask(022);

	mq_unlink(na);
	mq_unlink(nb);
	mq_unlink(nn);
	struct mq_attr aa = { .mq_maxmsg = 8, .mq_msgsize = 64 };
	mqd_t a = mq_open(na, O_CREAT | O_EXCL | O_RDWR | O_NONBLOCK, 0640, &aa);
	must(a != (mqd_t)-1, "mq_open a");
	mqd_t a_ro = mq_open(na, O_RDONLY);
	must(a_ro != (mqd_t)-1, "mq_open a O_RDONLY");
	must(mq_send(a, "low-1", 5, 1) == 0 && mq_send(a, "high", 4, 7) == 0 && mq_send(a, "low-2", 5, 1) == 0 && mq_send(a, "mid", 3, 3) == 0, "mq_send a");

	struct mq_attr ab = { .mq_maxmsg = 5, .mq_msgsize = 128 };
	mqd_t b = mq_open(nb, O_CREAT | O_EXCL | O_WRONLY, 0604, &ab);
	must(b != (mqd_t)-1, "mq_open b");
	must(mq_send(b, "b-zero", 6, 0) == 0 && mq_send(b, big, 100, 0) == 0 && mq_send(b, "b-top", 5, 32767) == 0, "mq_send b");
	must(fchown(b, 1000, 1001) == 0, "fchown b");
	mq_close(b);

	if (with_notify) {
		mqd_t n = mq_open(nn, O_CREAT | O_EXCL | O_RDWR, 0600, NULL);
		must(n != (mqd_t)-1, "mq_open n");
		struct sigevent ev = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR2 };
		must(mq_notify(n, &ev) == 0, "mq_notify n");
	}

	wl_ready("a %s\nb %s\n", na, nb);
	while (!wl_check_requested())
		wl_sleep_ms(20);

	/* Descriptors: access mode and O_NONBLOCK as they were. */
	int fl = fcntl(a, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDWR || !(fl & O_NONBLOCK))
		wl_fail("kept descriptor of %s: flags %#o, want O_RDWR|O_NONBLOCK", na, fl);
	fl = fcntl(a_ro, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDONLY || (fl & O_NONBLOCK))
		wl_fail("read-only descriptor of %s: flags %#o, want O_RDONLY", na, fl);
	if (mq_send(a_ro, "no", 2, 0) == 0 || errno != EBADF)
		wl_fail("read-only descriptor of %s: mq_send did not fail with EBADF (%s)", na, strerror(errno));

	expect_file(na, 0640, 0, 0);
	expect_file(nb, 0604, 1000, 1001);

	const struct msg want_a[] = { { "high", 7 }, { "mid", 3 }, { "low-1", 1 }, { "low-2", 1 } };
	expect_queue(a, na, 8, 64, want_a, 4);
	char buf[64];
	struct mq_attr at;
	if (mq_getattr(a, &at) == 0 && (at.mq_flags & O_NONBLOCK) && (mq_receive(a, buf, sizeof(buf), NULL) >= 0 || errno != EAGAIN))
		wl_fail("%s: more messages than the checkpoint had, or not O_NONBLOCK (%s)", na, strerror(errno));
	/* The kept descriptor still works both ways, and so does the other. */
	if (mq_send(a, "after", 5, 2) != 0)
		wl_fail("%s: send after restore: %s", na, strerror(errno));
	const struct msg want_after[] = { { "after", 2 } };
	expect_queue(a_ro, na, 8, 64, want_after, 1);

	mqd_t b2 = mq_open(nb, O_RDONLY | O_NONBLOCK);
	if (b2 == (mqd_t)-1) {
		wl_fail("%s: %s", nb, strerror(errno));
	} else {
		const struct msg want_b[] = { { "b-top", 32767 }, { "b-zero", 0 }, { big, 0 } };
		expect_queue(b2, nb, 5, 128, want_b, 3);
		mq_close(b2);
	}
	if (notified)
		wl_fail("SIGUSR2 arrived %d times: an mq_notify registration fired", (int)notified);
	mq_unlink(na);
	mq_unlink(nb);
	mq_unlink(nn);
	return wl_finish();
}
