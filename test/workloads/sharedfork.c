/*
 * sharedfork: MAP_SHARED anonymous memory inherited across fork stays
 * one object after restore: the child keeps incrementing a counter in it
 * and the parent must see the increments; a private page inherited
 * across fork keeps its content in both.
 */
#include "workload.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	volatile long *shared = mmap(NULL, 4 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (shared == MAP_FAILED)
		wl_die("mmap shared");
	static char private_page[4096];
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
	wl_ready("child=%d\n", child);
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
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	return wl_finish();
}
