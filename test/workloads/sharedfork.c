/*
 * sharedfork: MAP_SHARED anonymous memory inherited across fork stays
 * one object after restore: the child keeps incrementing a counter in it
 * and the parent must see the increments; a private page inherited
 * across fork keeps its content in both and is still one page frame,
 * shared copy-on-write.
 */
#include "workload.h"

#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/wait.h>

/* pfn returns the page frame holding addr in task pid (root only), or 0. */
static uint64_t pfn(pid_t pid, const void *addr)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	uint64_t e = 0;
	if (pread(fd, &e, 8, (off_t)((uintptr_t)addr / 4096) * 8) != 8)
		e = 0;
	close(fd);
	if (!(e >> 63))
		return 0;
	return e & ((1ULL << 55) - 1);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	volatile long *shared = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		wl_die("mmap shared");
	/* Page aligned, so no other variable shares its frame (a write to
	 * one would copy the frame for the writer). */
	static char private_page[4096] __attribute__((aligned(4096)));
	memset(private_page, 'p', sizeof(private_page));
	shared[3] = 12345; /* a value only the parent wrote, before fork */
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		for (;;) {
			shared[1]++;
			if (private_page[100] != 'p')
				shared[2] = 1; /* the child's private copy went wrong */
			wl_sleep_ms(5);
		}
	}
	while (shared[1] < 10)
		wl_sleep_ms(5);
	/* After fork the private page is one frame for both, copy-on-write. */
	int cow = pfn(getpid(), private_page) != 0 && pfn(getpid(), private_page) == pfn(child, private_page);
	wl_ready("child=%d\ncow=%d\n", child, cow);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	long a = shared[1];
	wl_sleep_ms(200);
	long b = shared[1];
	if (b <= a)
		wl_fail("the child's increments are not seen: %ld then %ld (the mapping is no longer shared)", a, b);
	if (shared[2])
		wl_fail("the child's private page changed");
	if (shared[3] != 12345)
		wl_fail("shared[3] is %ld, was 12345", shared[3]);
	if (private_page[100] != 'p')
		wl_fail("the parent's private page changed");
	if (cow && pfn(getpid(), private_page) != pfn(child, private_page))
		wl_fail("the private page inherited across fork is no longer shared copy-on-write (frames %llx and %llx)",
			(unsigned long long)pfn(getpid(), private_page), (unsigned long long)pfn(child, private_page));
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return wl_finish();
}
