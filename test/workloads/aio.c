/*
 * aio: a native AIO context (io_setup) whose ring lies in the [aio]
 * mapping, holding events the task has not reaped: two reads of a file
 * in DIR completed before the dump (their events wait in the ring).
 * ARGV[2] varies it:
 *   wrap      the ring's head was first moved to its last slot (requests
 *             submitted and reaped), so the two events wrap around;
 *   inflight  a poll on an empty pipe is still in flight. No interface
 *             shows such a request: it is lost (not checked here), but
 *             the completed events must survive it;
 *   fork      a child forked after the reads has the ring mapped too
 *             (fork copies the mapping, not the context) and must see
 *             the same events in it after restore.
 *
 * After restore the context is at the same address (io_setup returned
 * it; it is also the ring), io_getevents returns the two completed
 * events with their data and user cookies, new requests complete on it,
 * and io_destroy works.
 */
#include "workload.h"

#include <linux/aio_abi.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static long io_setup(unsigned nr, aio_context_t *ctx) { return syscall(SYS_io_setup, nr, ctx); }
static long io_destroy(aio_context_t ctx) { return syscall(SYS_io_destroy, ctx); }
static long io_submit(aio_context_t ctx, long n, struct iocb **iocbs) { return syscall(SYS_io_submit, ctx, n, iocbs); }
static long io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev, struct timespec *ts)
{
	return syscall(SYS_io_getevents, ctx, min, max, ev, ts);
}

/* The ring's header (fs/aio.c struct aio_ring). */
struct aio_ring {
	unsigned id, nr, head, tail, magic, compat_features, incompat_features, header_length;
	struct io_event io_events[];
};

static char bufs[3][64];

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int inflight = argc > 2 && strcmp(argv[2], "inflight") == 0;
	int wrap = argc > 2 && strcmp(argv[2], "wrap") == 0;
	int forked = argc > 2 && strcmp(argv[2], "fork") == 0;
	char path[4096];
	wl_path(path, sizeof(path), "data");
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die(path);
	if (write(fd, "first-block-of-data.second-block-of-data.", 41) != 41)
		wl_die("write");
	aio_context_t ctx = 0;
	if (io_setup(16, &ctx) < 0)
		wl_die("io_setup");
	struct iocb cbs[3], *list[3];
	struct aio_ring *ring = (struct aio_ring *)ctx;
	if (wrap) {
		/* One read submitted and reaped at a time, up to the last slot. */
		while (ring->head != ring->nr - 1) {
			struct io_event ev;
			memset(cbs, 0, sizeof(cbs));
			cbs[0].aio_lio_opcode = IOCB_CMD_PREAD;
			cbs[0].aio_fildes = fd;
			cbs[0].aio_buf = (unsigned long)bufs[2];
			cbs[0].aio_nbytes = 1;
			list[0] = &cbs[0];
			if (io_submit(ctx, 1, list) != 1 || io_getevents(ctx, 1, 1, &ev, NULL) != 1)
				wl_die("move the ring's head");
		}
	}
	memset(cbs, 0, sizeof(cbs));
	for (int i = 0; i < 2; i++) {
		cbs[i].aio_data = 0x1000 + i;
		cbs[i].aio_lio_opcode = IOCB_CMD_PREAD;
		cbs[i].aio_fildes = fd;
		cbs[i].aio_buf = (unsigned long)bufs[i];
		cbs[i].aio_nbytes = 20;
		cbs[i].aio_offset = 20 * i;
		list[i] = &cbs[i];
	}
	if (io_submit(ctx, 2, list) != 2)
		wl_die("io_submit");
	int p[2];
	if (pipe2(p, O_CLOEXEC) < 0)
		wl_die("pipe");
	if (inflight) {
		cbs[2].aio_data = 0x2000;
		cbs[2].aio_lio_opcode = IOCB_CMD_POLL;
		cbs[2].aio_fildes = p[0];
		cbs[2].aio_buf = POLLIN;
		list[2] = &cbs[2];
		if (io_submit(ctx, 1, &list[2]) != 1)
			wl_die("io_submit poll");
	}
	/* Buffered reads of a regular file complete at once: wait for the ring to show both. */
	for (int i = 0; i < 500 && (ring->tail - ring->head + ring->nr) % ring->nr < 2; i++)
		wl_sleep_ms(10);
	if ((ring->tail - ring->head + ring->nr) % ring->nr != 2)
		wl_die("the two reads did not complete");
	if (wrap && ring->tail >= ring->head)
		wl_die("the events do not wrap around the ring");
	pid_t child = -1;
	int cp[2];
	if (forked) {
		if (pipe2(cp, O_CLOEXEC) < 0)
			wl_die("pipe");
		child = fork();
		if (child < 0)
			wl_die("fork");
		if (child == 0) {
			/* Report what the ring shows once the parent says so. */
			char c;
			if (read(cp[0], &c, 1) != 1)
				_exit(2);
			_exit(ring->magic == 0xa10a10a1 && ring->tail - ring->head == 2 &&
					      ring->io_events[ring->head].data == 0x1000 ? 0 : 1);
		}
	}
	wl_ready("ctx %#llx\nnr %u\nhead %u\ntail %u\n", (unsigned long long)ctx, ring->nr, ring->head, ring->tail);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (forked) {
		int status;
		if (write(cp[1], "c", 1) != 1 || waitpid(child, &status, 0) != child)
			wl_die("child");
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			wl_fail("the child's copy of the ring mapping lost its events (status %#x)", status);
	}
	struct io_event ev[4];
	struct timespec ts = { 5, 0 };
	long n = io_getevents(ctx, 2, 2, ev, &ts);
	if (n != 2) {
		wl_fail("io_getevents returned %ld (%s), want the 2 completed reads", n, n < 0 ? strerror(errno) : "");
	} else {
		for (int i = 0; i < 2; i++) {
			if (ev[i].data != 0x1000 + (unsigned)i || ev[i].obj != (unsigned long)&cbs[i] || ev[i].res != 20)
				wl_fail("event %d: data %#llx obj %#llx res %lld, want %#x %p 20", i, (unsigned long long)ev[i].data,
					(unsigned long long)ev[i].obj, (long long)ev[i].res, 0x1000 + i, (void *)&cbs[i]);
		}
		if (memcmp(bufs[0], "first-block-of-data.", 20) || memcmp(bufs[1], "second-block-of-data", 20))
			wl_fail("the completed reads' buffers lost their data");
	}
	/* A new request on the restored context. */
	memset(&cbs[0], 0, sizeof(cbs[0]));
	cbs[0].aio_data = 0x3000;
	cbs[0].aio_lio_opcode = IOCB_CMD_PREAD;
	cbs[0].aio_fildes = fd;
	cbs[0].aio_buf = (unsigned long)bufs[2];
	cbs[0].aio_nbytes = 5;
	list[0] = &cbs[0];
	if (io_submit(ctx, 1, list) != 1)
		wl_fail("io_submit on the restored context: %s", strerror(errno));
	else if ((n = io_getevents(ctx, 1, 1, ev, &ts)) != 1 || ev[0].data != 0x3000 || ev[0].res != 5 || memcmp(bufs[2], "first", 5))
		wl_fail("a new read on the restored context did not complete (%ld)", n);
	if (io_destroy(ctx) < 0)
		wl_fail("io_destroy of the restored context: %s", strerror(errno));
	return wl_finish();
}
