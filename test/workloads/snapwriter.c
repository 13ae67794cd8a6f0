/*
 * snapwriter MIB [still|huge]: writes all over its memory, without pause,
 * while it is dumped with --leave-running, so that a dump whose pages are
 * not all of one instant fails its check. With "still" it writes nothing
 * after it is ready (two dumps of it must be the same); with "huge" its
 * big region asks for transparent huge pages (MADV_HUGEPAGE), for
 * measuring the fork of a snapshot on them; with "forkall" its
 * MADV_DONTFORK region is a plain private one (a dump then finds the
 * MADV_WIPEONFORK one without reading smaps while the task is stopped).
 *
 * Its pages, in two sequences:
 *   A: MIB MiB of private anonymous memory;
 *   S: 1 MiB with MADV_DONTFORK      (a fork leaves it out),
 *      1 MiB with MADV_WIPEONFORK    (a fork gives zeros),
 *      1 MiB MAP_SHARED|MAP_ANONYMOUS (a fork shares it),
 * are rewritten in turn, forever: step s writes page s % A of the first
 * and page s % S of the second whole, with words derived from (page,
 * generation s / A + 1 or s / S + 1), then counts s + 1 in `done`. So at
 * any instant page i of a sequence of n pages holds generation
 * (done - i + n - 1) / n (0: never written, its initial words), except
 * the pages being written, which the interrupted loop completes when it
 * runs again. The 768 pages of S are each rewritten every 768 steps: a
 * dump that reads them a moment late sees newer ones. `done` lives in
 * memory like the pages: a restored copy whose pages come from other
 * instants than its `done` (and than its registers) fails.
 *
 * A process other than the one started that runs its loop (a snapshot
 * child that escaped into the task's code) writes its PID into a shared
 * page, which fails the check, and DIR/ghost, and exits.
 *
 * On DIR/check (polled every 64 pages) it finishes the page it writes,
 * then checks every page against `done`, and that the three special
 * regions still have their VmFlags (dc, wf) in smaps, and exits.
 */
#include "workload.h"

#include <stdint.h>
#include <sched.h>
#include <sys/inotify.h>
#include <sys/mman.h>

#define PAGE 4096UL
#define WORDS (PAGE / 8)
#define SPECIAL (1UL << 20)

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

static inline uint64_t word(uint64_t page, uint64_t gen, uint64_t i)
{
	return mix(page * 0x9E3779B97F4A7C15ULL + gen * 0x100000001b3ULL + i);
}

static size_t anon_pages, special_pages, npages;
static uint8_t *anon, *dontfork, *wipe, *shared;

static uint64_t *page_at(size_t i)
{
	if (i < anon_pages)
		return (uint64_t *)(anon + i * PAGE);
	i -= anon_pages;
	uint8_t *r = i < special_pages ? dontfork : i < 2 * special_pages ? wipe : shared;
	return (uint64_t *)(r + (i % special_pages) * PAGE);
}

static void fill(size_t page, uint64_t gen)
{
	uint64_t *p = page_at(page);
	for (size_t i = 0; i < WORDS; i++)
		p[i] = word(page, gen, i);
}

/* vmflags_has reports whether the mapping at addr lists flag in smaps. */
static int vmflags_has(void *addr, const char *flag)
{
	static char buf[1 << 20];
	ssize_t n = -1;
	int fd = open("/proc/self/smaps", O_RDONLY);
	if (fd >= 0) {
		size_t off = 0;
		while (off + 1 < sizeof(buf) && (n = read(fd, buf + off, sizeof(buf) - 1 - off)) > 0)
			off += n;
		buf[off] = 0;
		close(fd);
	}
	char head[64];
	snprintf(head, sizeof(head), "%lx-", (unsigned long)addr);
	for (char *l = buf; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		if (strncmp(l, head, strlen(head)) != 0)
			continue;
		char *vf = strstr(l, "VmFlags:");
		if (!vf)
			return 0;
		char *end = strchr(vf, '\n');
		char want[8];
		snprintf(want, sizeof(want), " %s", flag);
		for (char *f = strstr(vf, want); f && (!end || f < end); f = strstr(f + 1, want))
			if (f[3] == ' ' || f[3] == '\n')
				return 1;
		return 0;
	}
	return 0;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 256;
	anon_pages = (mib << 20) / PAGE;
	special_pages = SPECIAL / PAGE;
	npages = anon_pages + 3 * special_pages;

	int prot = PROT_READ | PROT_WRITE;
	/*
	 * Mapped top-down: the special regions above the big one, so that a
	 * dump, which copies in address order, reads them last, long after
	 * the task was let go.
	 */
	shared = mmap(NULL, SPECIAL, prot, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	wipe = mmap(NULL, SPECIAL, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dontfork = mmap(NULL, SPECIAL, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	anon = mmap(NULL, mib << 20, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (anon == MAP_FAILED || dontfork == MAP_FAILED || wipe == MAP_FAILED || shared == MAP_FAILED)
		wl_die("mmap");
	int forkall = argc > 3 && strcmp(argv[3], "forkall") == 0;
	if ((!forkall && madvise(dontfork, SPECIAL, MADV_DONTFORK) < 0) || madvise(wipe, SPECIAL, MADV_WIPEONFORK) < 0)
		wl_die("madvise");
	if (argc > 3 && strcmp(argv[3], "huge") == 0 && madvise(anon, mib << 20, MADV_HUGEPAGE) < 0)
		wl_die("madvise(MADV_HUGEPAGE)");
	for (size_t i = 0; i < npages; i++)
		fill(i, 0);
	int still = argc > 3 && strcmp(argv[3], "still") == 0;
	/*
	 * Still: two dumps of it must match byte for byte. It stays on one
	 * CPU, because the kernel writes the CPU a thread last ran on into
	 * its rseq area (glibc registers one) on its way back to user space,
	 * and it blocks in one read until DIR/check appears rather than in a
	 * sleep loop, whose calls leave different bytes below the stack
	 * pointer depending on where a dump catches it; all set up before it
	 * says it is ready, which is when the test starts to dump it.
	 */
	int ifd = -1;
	if (still) {
		cpu_set_t one;
		CPU_ZERO(&one);
		CPU_SET(0, &one);
		if (sched_setaffinity(0, sizeof(one), &one) < 0)
			wl_die("sched_setaffinity");
		if ((ifd = inotify_init1(IN_CLOEXEC)) < 0 || inotify_add_watch(ifd, wl_dir, IN_CREATE | IN_MOVED_TO) < 0)
			wl_die("inotify");
	}
	wl_ready("pages %zu\n", npages);

	/* volatile: kept in memory, where the dump finds it with the pages. */
	static volatile uint64_t done;
	while (still && !wl_check_requested()) {
		char ev[4096];
		if (read(ifd, ev, sizeof(ev)) < 0 && errno != EINTR)
			wl_die("read inotify");
	}
	/*
	 * A snapshot child must never run this code: a copy of this process
	 * that does (a child whose exit path failed) says so in DIR/ghost
	 * and leaves without touching anything else.
	 */
	pid_t self = getpid();
	volatile int *ghost = mmap(NULL, PAGE, prot, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (ghost == MAP_FAILED)
		wl_die("mmap ghost");
	for (;;) {
		if (still)
			break;
		if (getpid() != self) {
			/* First in memory the task shares: file I/O may fail. */
			*ghost = getpid();
			char msg[64];
			int n = snprintf(msg, sizeof(msg), "pid %d ran the code of %d\n", (int)getpid(), (int)self);
			wl_write_file("ghost", msg, (size_t)n);
			_exit(3);
		}
		uint64_t s = done;
		fill(s % anon_pages, s / anon_pages + 1);
		fill(anon_pages + s % (3 * special_pages), s / (3 * special_pages) + 1);
		done = s + 1;
		if ((s & 63) == 0 && wl_check_requested())
			break;
	}

	uint64_t d = done;
	size_t bad = 0;
	for (size_t i = 0; i < npages; i++) {
		uint64_t k = i < anon_pages ? i : i - anon_pages, n = i < anon_pages ? anon_pages : 3 * special_pages;
		uint64_t gen = d > k ? (d - k + n - 1) / n : 0;
		const uint64_t *p = page_at(i);
		for (size_t w = 0; w < WORDS; w++) {
			if (p[w] == word(i, gen, w))
				continue;
			if (bad++ < 5)
				wl_fail("page %zu (%s) word %zu is %#llx, want generation %llu of %llu steps", i,
					i < anon_pages ? "private" : i < anon_pages + special_pages ? "dontfork" :
					i < anon_pages + 2 * special_pages ? "wipeonfork" : "shared",
					w, (unsigned long long)p[w], (unsigned long long)gen, (unsigned long long)d);
			break;
		}
	}
	if (bad > 5)
		wl_fail("%zu pages differ in all", bad);
	if (!still && *ghost != 0)
		wl_fail("process %d ran this process's code (an escaped snapshot child)", *ghost);
	if (!forkall && !vmflags_has(dontfork, "dc"))
		wl_fail("the MADV_DONTFORK region lost its dc flag");
	if (!vmflags_has(wipe, "wf"))
		wl_fail("the MADV_WIPEONFORK region lost its wf flag");
	wl_printf("%llu steps (%llu generations of %zu private pages), %zu pages checked\n", (unsigned long long)d,
		  (unsigned long long)(d / anon_pages), anon_pages, npages);
	return wl_finish();
}
