/*
 * shmemparts: one shared anonymous object of 2 MiB that no task maps
 * whole. The parent keeps [0.5, 2) MiB of it (its mapping starts at
 * offset 0.5 MiB), its child keeps [0, 1.5) MiB; every page holds a
 * pattern of its offset. The check reads every page each maps, in the
 * parent and in the child, and the child answers the parent's ping
 * through the part both map: still one object.
 */
#include "workload.h"

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PAGE 4096UL
#define MIB (1UL << 20)

static uint64_t word(size_t off)
{
	return (off * 0x9E3779B97F4A7C15ULL) ^ 0xa5a5;
}

/* bad counts the pages of [from, to) of the object, mapped at base (the
 * object's offset 0), that differ. */
static size_t bad(const volatile uint8_t *base, size_t from, size_t to, const char *who)
{
	size_t n = 0;
	for (size_t off = from; off < to; off += PAGE) {
		if (off == MIB)
			continue; /* the ping page */
		uint64_t got = *(const volatile uint64_t *)(base + off);
		if (got != word(off) && n++ < 3)
			wl_fail("%s: the page at offset %#zx holds %#llx, want %#llx", who, off, (unsigned long long)got,
				(unsigned long long)word(off));
	}
	return n;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	uint8_t *m = mmap(NULL, 2 * MIB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		wl_die("mmap");
	for (size_t off = 0; off < 2 * MIB; off += PAGE)
		*(uint64_t *)(m + off) = word(off);
	volatile uint64_t *ping = (volatile uint64_t *)(m + MIB), *pong = ping + 1;
	*ping = *pong = 0;
	int ready[2];
	if (pipe(ready) < 0)
		wl_die("pipe");
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		munmap(m + 3 * MIB / 2, MIB / 2);
		if (write(ready[1], "x", 1) != 1)
			_exit(1);
		for (;;) {
			if (*pong != *ping) {
				/* Answer only if the child still sees its own part. */
				*pong = bad(m, 0, 3 * MIB / 2, "child") == 0 ? *ping : (uint64_t)-1;
			}
			usleep(1000);
		}
	}
	char c;
	if (read(ready[0], &c, 1) != 1)
		wl_die("child not ready");
	munmap(m, MIB / 2);
	wl_ready("pid %d\nchild %d\n", getpid(), (int)child);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	size_t n = bad(m, MIB / 2, 2 * MIB, "parent");
	if (n > 3)
		wl_fail("%zu pages differ in the parent", n);
	*ping = 42;
	for (int i = 0; i < 2000 && *pong != *ping; i++)
		wl_sleep_ms(1);
	if (*pong == (uint64_t)-1)
		wl_fail("the child found pages of its part different (see above is the parent's view)");
	else if (*pong != *ping)
		wl_fail("the child did not answer through the part both map (pong %llu)", (unsigned long long)*pong);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	wl_printf("ping answered\n");
	return wl_finish();
}
