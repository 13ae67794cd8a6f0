/*
 * sigtrap: a SIGTRAP handler and a pending SIGTRAP.
 *
 *   sigtrap handler   an SA_SIGINFO handler for SIGTRAP
 *   sigtrap pending   the same, SIGTRAP blocked, and one SIGTRAP queued
 *                     to itself with sigqueue (value 1234): it stays
 *                     pending across the dump
 *
 * After restore it checks that the handler is still installed; in
 * pending mode that SIGTRAP is still blocked and pending, then unblocks
 * it and expects the queued signal to arrive once with its value and
 * SI_QUEUE code. Then an int3 must reach the same handler (si_code
 * SI_KERNEL on x86-64).
 */
#include "workload.h"

#include <signal.h>

static volatile sig_atomic_t traps, last_code, last_value;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	traps++;
	last_code = si->si_code;
	last_value = si->si_value.sival_int;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int pending = argc > 2 && strcmp(argv[2], "pending") == 0;
	struct sigaction sa = { .sa_sigaction = on_trap, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGTRAP, &sa, NULL) < 0)
		wl_die("sigaction");
	sigset_t trap;
	sigemptyset(&trap);
	sigaddset(&trap, SIGTRAP);
	if (pending) {
		if (sigprocmask(SIG_BLOCK, &trap, NULL) < 0)
			wl_die("sigprocmask");
		if (sigqueue(getpid(), SIGTRAP, (union sigval){ .sival_int = 1234 }) < 0)
			wl_die("sigqueue");
	}
	wl_ready("pending %d\n", pending);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct sigaction now;
	if (sigaction(SIGTRAP, NULL, &now) < 0 || now.sa_sigaction != on_trap || !(now.sa_flags & SA_SIGINFO))
		wl_fail("the SIGTRAP handler is %p flags %#x, want %p with SA_SIGINFO", (void *)now.sa_sigaction,
			now.sa_flags, (void *)on_trap);
	if (pending) {
		sigset_t pend, mask;
		sigpending(&pend);
		if (!sigismember(&pend, SIGTRAP))
			wl_fail("SIGTRAP is not pending");
		sigprocmask(SIG_BLOCK, NULL, &mask);
		if (!sigismember(&mask, SIGTRAP))
			wl_fail("SIGTRAP is not blocked");
		if (traps != 0)
			wl_fail("the handler ran %d times before SIGTRAP was unblocked", (int)traps);
		if (sigprocmask(SIG_UNBLOCK, &trap, NULL) < 0)
			wl_die("sigprocmask");
		if (traps != 1 || last_code != SI_QUEUE || last_value != 1234)
			wl_fail("the pending SIGTRAP: handler ran %d times, code %d value %d, want once, %d, 1234",
				(int)traps, (int)last_code, (int)last_value, SI_QUEUE);
	}
	int before = traps;
	__asm__ volatile("int3");
	if (traps != before + 1 || last_code != SI_KERNEL)
		wl_fail("int3: handler ran %d times, last code %d, want once and %d", (int)(traps - before),
			(int)last_code, SI_KERNEL);
	return wl_finish();
}
