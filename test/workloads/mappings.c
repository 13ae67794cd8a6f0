/*
 * mappings: one mapping of every kind, checked after restore.
 *
 *   heap        malloc'd block below the mmap threshold (brk), and sbrk(0)
 *   big         8 MiB private anonymous, every 4th page never touched
 *   stack       16 KiB of data in main's frame
 *   private     private mapping of DIR/private.dat, pages 1 and 3 written
 *               (copy-on-write); pages 0 and 2 must still show the file,
 *               and the file itself must be unchanged
 *   shared      shared mapping of DIR/shared.dat: written before the dump;
 *               after restore writes through the mapping reach the file
 *               and writes to the file show in the mapping
 *   shanon      shared anonymous mapping with content
 *   guard       three pages, the middle one PROT_NONE
 *   readonly    anonymous page filled, then made PROT_READ
 *   vdso        [vdso], [vvar], [vvar_vclock] at the same addresses, and
 *               clock_gettime, gettimeofday and time still work
 *   advised     four pages: MADV_WIPEONFORK, MADV_DONTDUMP, mlock'ed,
 *               MADV_DONTFORK; their VmFlags in smaps read the same
 *
 * ready holds /proc/self/maps; after restore every mapping listed there
 * must exist with the same start-end, permissions, offset and path (a
 * failure says whether only the VMA boundaries differ, see merged_maps).
 */
#include "workload.h"

#include <stdint.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>

#define BIG_BYTES (8UL << 20)
#define HEAP_BYTES (64UL << 10)
#define SHANON_BYTES (64UL << 10)

static long pg;
static char maps_now[1 << 16];

static void read_maps(char *buf, size_t cap)
{
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		wl_die("open /proc/self/maps");
	size_t off = 0;
	for (;;) {
		ssize_t n = read(fd, buf + off, cap - 1 - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			wl_die("read /proc/self/maps");
		if (n == 0)
			break;
		off += n;
		if (off + 1 >= cap) {
			errno = EOVERFLOW;
			wl_die("/proc/self/maps too long");
		}
	}
	close(fd);
	buf[off] = 0;
}

struct maps_line {
	unsigned long start, end, offset;
	char perms[8];
	char path[512];
};

/* parse_maps_line parses one line of /proc/PID/maps; returns 0 on success. */
static int parse_maps_line(const char *line, struct maps_line *m)
{
	int consumed = 0;
	m->path[0] = 0;
	if (sscanf(line, "%lx-%lx %7s %lx %*s %*s%n", &m->start, &m->end, m->perms, &m->offset, &consumed) != 4)
		return -1;
	const char *p = line + consumed;
	while (*p == ' ')
		p++;
	size_t n = strcspn(p, "\n");
	if (n >= sizeof(m->path))
		n = sizeof(m->path) - 1;
	memcpy(m->path, p, n);
	m->path[n] = 0;
	return 0;
}

/* find_mapping finds the line of maps that starts at start. */
static int find_mapping(const char *maps, unsigned long start, struct maps_line *out)
{
	for (const char *p = maps; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (parse_maps_line(p, out) == 0 && out->start == start)
			return 0;
	}
	return -1;
}

/*
 * merged_maps parses maps into v and merges neighbours that the kernel
 * keeps apart only for reasons of its own (same permissions and path,
 * contiguous offsets: for instance a RELRO range whose pages were written
 * next to one never written). The comparison is strict; merging only tells
 * a failure that is about VMA boundaries from one about what is mapped.
 */
static size_t merged_maps(const char *maps, struct maps_line *v, size_t cap)
{
	size_t n = 0;
	for (const char *p = maps; p && *p && n < cap; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		struct maps_line m;
		if (parse_maps_line(p, &m) < 0)
			continue;
		if (n > 0) {
			struct maps_line *last = &v[n - 1];
			int anon = last->path[0] == 0 || last->path[0] == '[';
			if (last->end == m.start && !strcmp(last->perms, m.perms) && !strcmp(last->path, m.path) &&
			    (anon || last->offset + (last->end - last->start) == m.offset)) {
				last->end = m.end;
				continue;
			}
		}
		v[n++] = m;
	}
	return n;
}

static int find_named(const char *maps, const char *name, struct maps_line *out)
{
	for (const char *p = maps; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		if (parse_maps_line(p, out) == 0 && strcmp(out->path, name) == 0)
			return 0;
	}
	return -1;
}

static void make_file(const char *name, int pages, int first_char)
{
	char path[4096], page[65536];
	wl_path(path, sizeof(path), name);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		wl_die(path);
	for (int i = 0; i < pages; i++) {
		memset(page, first_char ? first_char + i : 0, pg);
		if (write(fd, page, pg) != pg)
			wl_die(path);
	}
	close(fd);
}

static int open_file(const char *name)
{
	char path[4096];
	wl_path(path, sizeof(path), name);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		wl_die(path);
	return fd;
}

static int check_bytes(const char *what, const unsigned char *p, size_t n, unsigned char want)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != want) {
			wl_fail("%s: byte %zu is %#x, want %#x", what, i, p[i], want);
			return -1;
		}
	}
	return 0;
}

static double ts_sec(struct timespec ts)
{
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* vmflags copies the VmFlags of the mapping holding addr from smaps. */
static void vmflags(void *addr, char *out, size_t cap)
{
	static char buf[1 << 20];
	out[0] = 0;
	int fd = open("/proc/self/smaps", O_RDONLY);
	ssize_t n = 0, r;
	while (fd >= 0 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += r;
	if (fd >= 0)
		close(fd);
	buf[n > 0 ? n : 0] = 0;
	int in = 0;
	for (char *line = buf; line && *line;) {
		char *nl = strchr(line, '\n');
		if (nl)
			*nl = 0;
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = (unsigned long)addr >= lo && (unsigned long)addr < hi;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			snprintf(out, cap, "%s", line + 9);
			return;
		}
		line = nl ? nl + 1 : NULL;
	}
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	pg = sysconf(_SC_PAGESIZE);
	volatile unsigned char stack[16384];
	for (size_t i = 0; i < sizeof(stack); i++)
		stack[i] = (unsigned char)(i * 13 + 5);

	/* heap (brk) */
	unsigned char *heap = malloc(HEAP_BYTES);
	if (!heap)
		wl_die("malloc");
	for (size_t i = 0; i < HEAP_BYTES; i++)
		heap[i] = (unsigned char)(i * 7);
	void *brk_before = sbrk(0);

	/* big private anonymous */
	unsigned char *big = mmap(NULL, BIG_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (big == MAP_FAILED)
		wl_die("mmap big");
	for (size_t p = 0; p < BIG_BYTES / pg; p++)
		if (p % 4 != 3)
			memset(big + p * pg, (int)(p % 251) + 1, pg);

	/* private file mapping, COW on pages 1 and 3 */
	make_file("private.dat", 4, 'a');
	int pfd = open_file("private.dat");
	unsigned char *priv = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE, pfd, 0);
	if (priv == MAP_FAILED)
		wl_die("mmap private.dat");
	close(pfd);
	memset(priv + 1 * pg, 'X', 100);
	memset(priv + 3 * pg, 'Y', 100);

	/* shared file mapping */
	make_file("shared.dat", 2, 0);
	int sfd = open_file("shared.dat");
	char *shared = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	if (shared == MAP_FAILED)
		wl_die("mmap shared.dat");
	strcpy(shared, "written through the mapping before the dump");
	if (msync(shared, 2 * pg, MS_SYNC) < 0)
		wl_die("msync");

	/* shared anonymous */
	unsigned char *shanon = mmap(NULL, SHANON_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shanon == MAP_FAILED)
		wl_die("mmap shared anon");
	for (size_t i = 0; i < SHANON_BYTES; i++)
		shanon[i] = (unsigned char)(i * 3 + 1);

	/* guard: RW, PROT_NONE, RW */
	unsigned char *guard = mmap(NULL, 3 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guard == MAP_FAILED)
		wl_die("mmap guard");
	memset(guard, 'L', pg);
	memset(guard + 2 * pg, 'R', pg);
	if (mprotect(guard + pg, pg, PROT_NONE) < 0)
		wl_die("mprotect guard");

	/* read-only page with content */
	unsigned char *ro = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ro == MAP_FAILED)
		wl_die("mmap ro");
	memset(ro, 'Q', pg);
	if (mprotect(ro, pg, PROT_READ) < 0)
		wl_die("mprotect ro");

	/* advised: one page of each advice, each its own VMA */
	unsigned char *adv = mmap(NULL, 4 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (adv == MAP_FAILED)
		wl_die("mmap advised");
	memset(adv, 'A', 4 * pg);
	if (madvise(adv, pg, MADV_WIPEONFORK) || madvise(adv + pg, pg, MADV_DONTDUMP) || mlock(adv + 2 * pg, pg) ||
	    madvise(adv + 3 * pg, pg, MADV_DONTFORK))
		wl_die("madvise advised");
	char advflags[4][256];
	for (int i = 0; i < 4; i++)
		vmflags(adv + i * pg, advflags[i], sizeof(advflags[i]));

	struct timespec mono_before, real_before;
	clock_gettime(CLOCK_MONOTONIC, &mono_before);
	clock_gettime(CLOCK_REALTIME, &real_before);

	read_maps(maps_now, sizeof(maps_now));
	wl_ready("pid %d\nbrk %p\nheap %p\nbig %p\npriv %p\nshared %p\nshanon %p\nguard %p\nro %p\n"
		 "stack %p\nmono %.9f\nreal %.9f\nadv0 %s\nadv1 %s\nadv2 %s\nadv3 %s\nmaps\n%s",
		 getpid(), brk_before, (void *)heap, (void *)big, (void *)priv, (void *)shared,
		 (void *)shanon, (void *)guard, (void *)ro, (void *)stack,
		 ts_sec(mono_before), ts_sec(real_before), advflags[0], advflags[1], advflags[2], advflags[3], maps_now);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	/* Layout first, before anything below could change it. */
	read_maps(maps_now, sizeof(maps_now));
	const char *before = wl_saved("maps");
	if (!before) {
		errno = ENOENT;
		wl_die("maps in ready");
	}
	/* Strictly: every VMA with its own boundaries. */
	size_t strict_bad = 0;
	for (const char *p = before; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
		struct maps_line b, a;
		if (parse_maps_line(p, &b) < 0)
			continue;
		if (find_mapping(maps_now, b.start, &a) < 0) {
			wl_fail("mapping %lx-%lx %s %lx %s is gone after restore", b.start, b.end, b.perms, b.offset, b.path);
			strict_bad++;
		} else if (a.end != b.end || strcmp(a.perms, b.perms) || a.offset != b.offset || strcmp(a.path, b.path)) {
			wl_fail("mapping %lx-%lx %s %lx %s is %lx-%lx %s %lx %s after restore",
				b.start, b.end, b.perms, b.offset, b.path, a.start, a.end, a.perms, a.offset, a.path);
			strict_bad++;
		}
	}
	/* Then merged, to tell a split that differs from a range that does. */
	static struct maps_line was[1024], is[1024];
	size_t nwas = merged_maps(before, was, 1024), nis = merged_maps(maps_now, is, 1024);
	size_t merged_bad = 0;
	for (size_t i = 0; i < nwas; i++) {
		const struct maps_line *b = &was[i], *a = NULL;
		for (size_t j = 0; j < nis && !a; j++)
			if (is[j].start == b->start)
				a = &is[j];
		if (!a || a->end != b->end || strcmp(a->perms, b->perms) || a->offset != b->offset || strcmp(a->path, b->path))
			merged_bad++;
	}
	if (strict_bad && !merged_bad)
		wl_fail("(merging neighbours with the same perms, path and contiguous offsets, the ranges do match: only VMA boundaries differ)");
	for (size_t j = 0; j < nis; j++) {
		int old = 0;
		for (size_t i = 0; i < nwas && !old; i++)
			old = was[i].start <= is[j].start && is[j].start < was[i].end;
		if (!old)
			wl_printf("note: mapping %lx-%lx %s %s is new after restore\n", is[j].start, is[j].end, is[j].perms,
				  is[j].path);
	}
	static const char *const specials[] = { "[vdso]", "[vvar]", "[vvar_vclock]", "[heap]", "[stack]" };
	for (size_t i = 0; i < sizeof(specials) / sizeof(specials[0]); i++) {
		struct maps_line b, a;
		int had = find_named(before, specials[i], &b) == 0;
		int has = find_named(maps_now, specials[i], &a) == 0;
		if (had && !has)
			wl_fail("%s is gone after restore", specials[i]);
		else if (had && a.start != b.start)
			wl_fail("%s moved from %lx to %lx", specials[i], b.start, a.start);
	}
	struct maps_line g;
	if (find_mapping(maps_now, (unsigned long)guard + pg, &g) < 0 || strcmp(g.perms, "---p"))
		wl_fail("guard page at %p is not ---p after restore", (void *)(guard + pg));

	/* Contents. */
	for (size_t i = 0; i < sizeof(stack); i++) {
		if (stack[i] != (unsigned char)(i * 13 + 5)) {
			wl_fail("stack byte %zu is %#x", i, stack[i]);
			break;
		}
	}
	for (size_t i = 0; i < HEAP_BYTES; i++) {
		if (heap[i] != (unsigned char)(i * 7)) {
			wl_fail("heap byte %zu is %#x", i, heap[i]);
			break;
		}
	}
	if (sbrk(0) != brk_before)
		wl_fail("sbrk(0) is %p, was %p", sbrk(0), brk_before);
	for (size_t p = 0; p < BIG_BYTES / pg; p++) {
		char what[64];
		snprintf(what, sizeof(what), "big mapping page %zu", p);
		if (check_bytes(what, big + p * pg, pg, p % 4 == 3 ? 0 : (unsigned char)(p % 251) + 1) < 0)
			break;
	}
	check_bytes("private.dat page 0 (never written)", priv, pg, 'a');
	check_bytes("private.dat page 1 (written part)", priv + pg, 100, 'X');
	check_bytes("private.dat page 1 (rest)", priv + pg + 100, pg - 100, 'b');
	check_bytes("private.dat page 2 (never written)", priv + 2 * pg, pg, 'c');
	check_bytes("private.dat page 3 (written part)", priv + 3 * pg, 100, 'Y');
	unsigned char filebuf[4 * 16384];
	if (pread(sfd, filebuf, 1, 0) != 1)
		wl_fail("pread shared.dat: %s", strerror(errno));
	pfd = open_file("private.dat");
	if (pread(pfd, filebuf, 4 * pg, 0) != 4 * pg)
		wl_fail("pread private.dat: %s", strerror(errno));
	else if (filebuf[pg] != 'b' || filebuf[3 * pg] != 'd')
		wl_fail("private.dat on disk was changed by writes to a private mapping");
	close(pfd);

	if (strcmp(shared, "written through the mapping before the dump"))
		wl_fail("shared.dat mapping reads \"%.40s\"", shared);
	strcpy(shared + pg, "written through the mapping after restore");
	if (msync(shared, 2 * pg, MS_SYNC) < 0)
		wl_fail("msync shared.dat: %s", strerror(errno));
	char text[64] = { 0 };
	if (pread(sfd, text, sizeof(text) - 1, pg) < 0 || strcmp(text, "written through the mapping after restore"))
		wl_fail("shared.dat on disk reads \"%s\" after a write through the mapping", text);
	if (pwrite(sfd, "from the file", 14, 100) != 14)
		wl_fail("pwrite shared.dat: %s", strerror(errno));
	else if (strcmp(shared + 100, "from the file"))
		wl_fail("a write to shared.dat does not show in its mapping");

	for (size_t i = 0; i < SHANON_BYTES; i++) {
		if (shanon[i] != (unsigned char)(i * 3 + 1)) {
			wl_fail("shared anonymous byte %zu is %#x", i, shanon[i]);
			break;
		}
	}
	check_bytes("guard left page", guard, pg, 'L');
	check_bytes("guard right page", guard + 2 * pg, pg, 'R');
	check_bytes("read-only page", ro, pg, 'Q');

	/* vDSO still works and agrees with the kernel. */
	struct timespec mono, mono_sys, real;
	struct timeval tv;
	clock_gettime(CLOCK_MONOTONIC, &mono);
	syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &mono_sys);
	clock_gettime(CLOCK_REALTIME, &real);
	gettimeofday(&tv, NULL);
	time_t now = time(NULL);
	double saved_mono = strtod(wl_saved("mono"), NULL), saved_real = strtod(wl_saved("real"), NULL);
	if (ts_sec(mono) < saved_mono || ts_sec(mono) - ts_sec(mono_sys) > 1 || ts_sec(mono_sys) - ts_sec(mono) > 1)
		wl_fail("clock_gettime(MONOTONIC) %.6f: before %.6f, syscall says %.6f", ts_sec(mono), saved_mono, ts_sec(mono_sys));
	if (ts_sec(real) < saved_real - 1 || ts_sec(real) > saved_real + 3600)
		wl_fail("clock_gettime(REALTIME) %.6f, before %.6f", ts_sec(real), saved_real);
	if (tv.tv_sec < (time_t)saved_real - 1 || tv.tv_sec > (time_t)saved_real + 3600)
		wl_fail("gettimeofday %ld, before %.0f", (long)tv.tv_sec, saved_real);
	if (now < (time_t)saved_real - 1 || now > (time_t)saved_real + 3600)
		wl_fail("time() %ld, before %.0f", (long)now, saved_real);

	/* The advice of each page of advised. */
	for (int i = 0; i < 4; i++) {
		char key[8], now[256];
		snprintf(key, sizeof(key), "adv%d", i);
		vmflags(adv + i * pg, now, sizeof(now));
		const char *was = wl_saved(key);
		if (!was || strncmp(was, now, strlen(now)) || was[strlen(now)] != '\n')
			wl_fail("advised page %d has VmFlags %s, had %.60s", i, now, was ? was : "?");
	}

	/* The heap still grows. */
	unsigned char *more = malloc(HEAP_BYTES);
	if (!more)
		wl_fail("malloc after restore failed");
	else
		memset(more, 1, HEAP_BYTES);
	return wl_finish();
}
