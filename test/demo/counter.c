/* counter: the demo's process. It prints a numbered line every half second. */
#define _GNU_SOURCE
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <linux/close_range.h>

int main(void)
{
	setsid(); /* its own session: nothing ties it to the demo's shell */
	/* fds a shell leaked to us (pipes, ttys) are not what the demo shows. */
	close_range(3, ~0U, 0);
	for (unsigned long n = 1;; n++) {
		time_t now = time(NULL);
		struct tm tm;
		char when[32];
		strftime(when, sizeof(when), "%H:%M:%S", localtime_r(&now, &tm));
		printf("%s  pid %d  count %lu\n", when, getpid(), n);
		fflush(stdout);
		struct timespec half = { 0, 500000000L };
		nanosleep(&half, NULL); /* EINTR after restore is fine: count on */
	}
}
