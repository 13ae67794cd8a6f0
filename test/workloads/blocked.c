/*
 * blocked MODE: dumped while blocked in a syscall, woken after restore by
 * SIGUSR1 from the test.  MODE is one of
 *
 *   nanosleep   nanosleep(3600 s): returns 0 or -1/EINTR (a task dumped
 *               in nanosleep may see EINTR after restore); then the
 *               program goes on and waits for SIGUSR1
 *   pause       pause() returns -1/EINTR only after the handler ran
 *   sigsuspend  sigsuspend() with SIGUSR1 unblocked returns -1/EINTR after
 *               the handler ran, and the original mask {SIGUSR1, SIGUSR2}
 *               is back afterwards
 *   futex       FUTEX_WAIT on a word that the SIGUSR1 handler sets: the
 *               wait returns and the loop sees the word set
 *
 * In every mode a canary on the stack must survive.
 */
#include "workload.h"

#include <linux/futex.h>
#include <signal.h>
#include <sys/syscall.h>

static volatile sig_atomic_t got_usr1;
static volatile int word;

static void on_usr1(int sig)
{
	(void)sig;
	got_usr1 = 1;
	word = 1;
}

static unsigned long long mask_bits(const sigset_t *s)
{
	unsigned long long bits = 0;
	for (int sig = 1; sig <= 64; sig++)
		if (sigismember(s, sig) == 1)
			bits |= 1ULL << (sig - 1);
	return bits;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "";
	volatile unsigned long canary = 0xC0FFEE0000000000ULL | (unsigned)getpid();
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		wl_die("sigaction");
	wl_printf("blocking in %s\n", mode);

	if (!strcmp(mode, "nanosleep")) {
		struct timespec req = { 3600, 0 }, rem = { 0, 0 };
		double t0 = wl_now();
		wl_ready("pid %d\nmode %s\n", getpid(), mode);
		int r = nanosleep(&req, &rem);
		int err = errno;
		double slept = wl_now() - t0;
		if (r == 0 && slept < 3599)
			wl_fail("nanosleep(3600 s) returned 0 after %.1f s", slept);
		if (r < 0 && err != EINTR)
			wl_fail("nanosleep: %s", strerror(err));
		if (r < 0 && (rem.tv_sec > 3600 || (rem.tv_sec == 0 && rem.tv_nsec == 0)))
			wl_fail("nanosleep: EINTR with remaining time %ld.%09ld s", (long)rem.tv_sec, rem.tv_nsec);
		wl_printf("nanosleep returned %d (%s) after %.1f s\n", r, r ? strerror(err) : "ok", slept);
		/* The program goes on: wait for the test's SIGUSR1. */
		double deadline = wl_now() + 60;
		while (!got_usr1 && wl_now() < deadline)
			wl_sleep_ms(10);
		if (!got_usr1)
			wl_fail("no SIGUSR1 within 60 s after nanosleep returned");
	} else if (!strcmp(mode, "pause")) {
		wl_ready("pid %d\nmode %s\n", getpid(), mode);
		int r = pause();
		int err = errno;
		if (r != -1 || err != EINTR)
			wl_fail("pause returned %d (%s), want -1 EINTR", r, strerror(err));
		if (!got_usr1)
			wl_fail("pause returned before the SIGUSR1 handler ran");
	} else if (!strcmp(mode, "sigsuspend")) {
		sigset_t orig, during;
		sigemptyset(&orig);
		sigaddset(&orig, SIGUSR1);
		sigaddset(&orig, SIGUSR2);
		sigprocmask(SIG_SETMASK, &orig, NULL);
		sigemptyset(&during);
		sigaddset(&during, SIGUSR2);
		sigaddset(&during, SIGHUP);
		wl_ready("pid %d\nmode %s\n", getpid(), mode);
		int r = sigsuspend(&during);
		int err = errno;
		if (r != -1 || err != EINTR)
			wl_fail("sigsuspend returned %d (%s), want -1 EINTR", r, strerror(err));
		if (!got_usr1)
			wl_fail("sigsuspend returned before the SIGUSR1 handler ran");
		sigset_t now;
		sigprocmask(SIG_BLOCK, NULL, &now);
		if (mask_bits(&now) != mask_bits(&orig))
			wl_fail("after sigsuspend the blocked mask is %#llx, want the original %#llx", mask_bits(&now),
				mask_bits(&orig));
	} else if (!strcmp(mode, "futex")) {
		wl_ready("pid %d\nmode %s\n", getpid(), mode);
		int waits = 0;
		while (word == 0) {
			long r = syscall(SYS_futex, &word, FUTEX_WAIT, 0, NULL, NULL, 0);
			waits++;
			if (r < 0 && errno != EINTR && errno != EAGAIN) {
				wl_fail("FUTEX_WAIT: %s", strerror(errno));
				break;
			}
			if (r == 0 && word == 0 && waits > 1000) {
				wl_fail("FUTEX_WAIT keeps returning 0 with the word unset");
				break;
			}
		}
		if (!got_usr1)
			wl_fail("the futex wait ended before the SIGUSR1 handler ran");
	} else {
		fprintf(stderr, "usage: %s DIR nanosleep|pause|sigsuspend|futex\n", argv[0]);
		return 2;
	}

	if (canary != (0xC0FFEE0000000000ULL | (unsigned)getpid()))
		wl_fail("stack canary is %#lx", canary);
	int pid = wl_saved_num("pid");
	if (getpid() != pid)
		wl_fail("getpid() %d != pid %d at ready", getpid(), pid);
	return wl_finish();
}
