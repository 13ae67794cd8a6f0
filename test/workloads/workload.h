/*
 * workload.h: the protocol every workload follows, shared as static helpers.
 *
 *   WORKLOAD DIR [args]      stdin=/dev/null, stdout=DIR/out, stderr=DIR/err
 *
 *   1. set up the state to be checkpointed;
 *   2. write DIR/ready atomically (tmp + rename) with the values to check;
 *   3. wait (polling DIR/check, or blocked in a syscall) while the test
 *      dumps, kills and restores the process;
 *   4. verify the state, write DIR/result ("PASS" or "FAIL: what differed")
 *      and exit 0 on PASS, 1 on FAIL.
 *
 * The helpers never call malloc, so a workload that compares its memory
 * layout before and after restore does not change it by reporting.  Every
 * sleep treats EINTR as normal: a task dumped inside nanosleep may see
 * EINTR after restore.
 */
#ifndef WORKLOAD_H
#define WORKLOAD_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *wl_dir;

/* wl_failures accumulates "what differed", separated by "; ". */
static char wl_failures[16384];

static inline void wl_path(char *buf, size_t cap, const char *name)
{
	snprintf(buf, cap, "%s/%s", wl_dir, name);
}

static inline void wl_die(const char *what)
{
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "workload: %s: %s\n", what, strerror(errno));
	if (write(2, msg, n) < 0) {
		/* Nothing left to report to. */
	}
	exit(3);
}

static inline void wl_init(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR [args]\n", argv[0]);
		exit(2);
	}
	wl_dir = argv[1];
}

/* wl_write_file writes DIR/name atomically: DIR/name.tmp, then rename. */
static inline void wl_write_file(const char *name, const char *data, size_t len)
{
	char tmp[4096], dst[4096];
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", wl_dir, name);
	wl_path(dst, sizeof(dst), name);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die(tmp);
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			wl_die(tmp);
		off += n;
	}
	if (close(fd) < 0 || rename(tmp, dst) < 0)
		wl_die(dst);
}

/* wl_read_file reads DIR/name into buf (NUL-terminated); returns its length or -1. */
static inline ssize_t wl_read_file(const char *name, char *buf, size_t cap)
{
	char path[4096];
	wl_path(path, sizeof(path), name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t off = 0;
	while (off + 1 < cap) {
		ssize_t n = read(fd, buf + off, cap - 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		off += n;
	}
	close(fd);
	buf[off] = 0;
	return off;
}

static char wl_ready_buf[1 << 16];

/* wl_ready writes DIR/ready with the formatted values the workload will check. */
static inline void wl_ready(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(wl_ready_buf, sizeof(wl_ready_buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(wl_ready_buf)) {
		errno = EOVERFLOW;
		wl_die("ready too long");
	}
	wl_write_file("ready", wl_ready_buf, n);
}

static char wl_saved_buf[1 << 16];

/*
 * wl_saved returns the value of "key VALUE" in DIR/ready as read back from
 * disk (not from memory, which may be what restore got wrong), or NULL.
 */
static inline const char *wl_saved(const char *key)
{
	static int loaded;
	if (!loaded) {
		if (wl_read_file("ready", wl_saved_buf, sizeof(wl_saved_buf)) < 0)
			wl_die("read ready");
		loaded = 1;
	}
	size_t klen = strlen(key);
	for (const char *p = wl_saved_buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (strncmp(p, key, klen) == 0 && (p[klen] == ' ' || p[klen] == '\n'))
			return p + klen + 1; /* the value, or for "key\n" the lines after */
	}
	return NULL;
}

static inline unsigned long long wl_saved_num(const char *key)
{
	const char *v = wl_saved(key);
	if (!v) {
		errno = ENOENT;
		wl_die(key);
	}
	return strtoull(v, NULL, 0);
}

static inline void wl_fail(const char *fmt, ...)
{
	size_t len = strlen(wl_failures);
	if (len + 3 >= sizeof(wl_failures))
		return;
	if (len) {
		strcpy(wl_failures + len, "; ");
		len += 2;
	}
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(wl_failures + len, sizeof(wl_failures) - len, fmt, ap);
	va_end(ap);
}

/* wl_finish writes DIR/result and returns the exit status. */
static inline int wl_finish(void)
{
	char res[sizeof(wl_failures) + 16];
	int n;
	if (wl_failures[0])
		n = snprintf(res, sizeof(res), "FAIL: %s\n", wl_failures);
	else
		n = snprintf(res, sizeof(res), "PASS\n");
	if (n >= (int)sizeof(res))
		n = sizeof(res) - 1;
	wl_write_file("result", res, n);
	if (write(2, res, n) < 0) {
		/* The result file is what counts. */
	}
	return wl_failures[0] ? 1 : 0;
}

/* wl_sleep_ms sleeps about ms milliseconds; EINTR just ends the sleep early. */
static inline void wl_sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

/* wl_wait_file waits (20 s at most) for DIR/name to exist, written by
 * the test or another process of the workload; it dies naming it if not. */
static inline void wl_wait_file(const char *name)
{
	char buf[4096];
	for (int i = 0; i < 800 && wl_read_file(name, buf, sizeof(buf)) < 0; i++)
		wl_sleep_ms(25);
	if (wl_read_file(name, buf, sizeof(buf)) < 0) {
		errno = ETIMEDOUT;
		wl_die(name);
	}
}

static inline int wl_check_requested(void)
{
	char path[4096];
	wl_path(path, sizeof(path), "check");
	return access(path, F_OK) == 0;
}

static inline double wl_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* wl_printf writes a line to stdout with write(2): no stdio buffer to lose or allocate. */
static inline void wl_printf(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(buf))
		n = sizeof(buf) - 1;
	if (write(1, buf, n) != n)
		wl_fail("write to stdout: %s", strerror(errno));
}

#endif
