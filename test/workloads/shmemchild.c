/*
 * shmemchild: shared anonymous memory written only by children that
 * have exited, as a PostgreSQL backend writes the server's buffers: the
 * parent maps 8 MiB MAP_SHARED|MAP_ANONYMOUS, touches only its first
 * page, and lets two children fill the rest (every other 64 KiB run, a
 * pattern per page) and exit. The pages are in the shared object but in
 * no page table of the parent. The check reads them all in the parent
 * and in a new child.
 */
#include "workload.h"

#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096UL
#define SIZE (8UL << 20)
#define PAGES (SIZE / PAGE)

/* filled says whether the children write page i: runs of 16 pages, every other. */
static int filled(size_t i)
{
	return i > 0 && (i / 16) % 2 == 0;
}

static uint64_t word(size_t page, size_t w)
{
	return (page * 0x9E3779B97F4A7C15ULL) ^ (w * 0x100000001b3ULL) ^ 0x5a5a;
}

/* bad returns how many pages of m differ from what the children wrote. */
static size_t bad(const volatile uint64_t *m)
{
	size_t n = 0;
	for (size_t i = 1; i < PAGES; i++) {
		const volatile uint64_t *p = m + i * (PAGE / 8);
		for (size_t w = 0; w < PAGE / 8; w += 64) {
			uint64_t want = filled(i) ? word(i, w) : 0;
			if (p[w] != want) {
				if (n++ < 3)
					wl_fail("page %zu word %zu is %#llx, want %#llx", i, w, (unsigned long long)p[w],
						(unsigned long long)want);
				break;
			}
		}
	}
	return n;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	volatile uint64_t *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		wl_die("mmap");
	m[0] = 1;
	for (int c = 0; c < 2; c++) {
		pid_t pid = fork();
		if (pid < 0)
			wl_die("fork");
		if (pid == 0) {
			for (size_t i = 1; i < PAGES; i++)
				if (filled(i) && (i / 16) % 4 == (size_t)c * 2)
					for (size_t w = 0; w < PAGE / 8; w += 64)
						m[i * (PAGE / 8) + w] = word(i, w);
			_exit(0);
		}
		int st;
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			wl_die("child");
	}
	wl_ready("pid %d\n", getpid());
	while (!wl_check_requested())
		wl_sleep_ms(10);
	size_t n = bad(m);
	if (n > 3)
		wl_fail("%zu pages differ in all", n);
	pid_t pid = fork();
	if (pid == 0)
		_exit(bad(m) == 0 ? 0 : 1);
	int st;
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		wl_fail("a child forked after restore does not see the pages");
	wl_printf("%zu pages checked\n", (size_t)PAGES);
	return wl_finish();
}
