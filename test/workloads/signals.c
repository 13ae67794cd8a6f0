/*
 * signals: dispositions, the blocked mask, a pending queued signal and an
 * interval timer, checked after restore.
 *
 *   SIGUSR1       handler, SA_RESTART, sa_mask {SIGINT}
 *   SIGUSR2       SA_SIGINFO handler, sa_mask {SIGTERM, SIGHUP}; blocked,
 *                 one instance pending, sent with sigqueue(VALUE)
 *   SIGRTMIN+2    SA_SIGINFO|SA_NODEFER handler, sa_mask {SIGQUIT}
 *   SIGALRM       handler; ITIMER_REAL armed with a 2 s interval
 *   SIGPIPE       ignored
 *
 * After restore: sigaction() returns what it did before; the blocked mask
 * is the same; SIGUSR2 is pending and unblocking it delivers VALUE; the
 * handlers run with their sa_mask applied; getitimer shows the timer armed
 * and SIGALRM arrives.
 */
#include "workload.h"

#include <signal.h>
#include <sys/time.h>

#define USR2_VALUE 0x5eed1234
#define RT_VALUE 4242

static volatile sig_atomic_t usr1_count, usr2_count, rt_count, alrm_count;
static volatile int usr1_mask_ok, usr2_mask_ok, rt_mask_ok;
static volatile int usr2_value, usr2_code, usr2_pid, rt_value;

static int rtsig(void)
{
	return SIGRTMIN + 2;
}

static sigset_t blocked_now(void)
{
	sigset_t cur;
	sigprocmask(SIG_BLOCK, NULL, &cur);
	return cur;
}

static void on_usr1(int sig)
{
	(void)sig;
	sigset_t cur = blocked_now();
	usr1_mask_ok = sigismember(&cur, SIGINT) && sigismember(&cur, SIGUSR1);
	usr1_count++;
}

static void on_usr2(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	sigset_t cur = blocked_now();
	usr2_mask_ok = sigismember(&cur, SIGTERM) && sigismember(&cur, SIGHUP) && sigismember(&cur, SIGUSR2);
	usr2_value = si->si_value.sival_int;
	usr2_code = si->si_code;
	usr2_pid = si->si_pid;
	usr2_count++;
}

static void on_rt(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	sigset_t cur = blocked_now();
	/* SA_NODEFER: the signal itself stays deliverable inside its handler. */
	rt_mask_ok = sigismember(&cur, SIGQUIT) && !sigismember(&cur, sig);
	rt_value = si->si_value.sival_int;
	rt_count++;
}

static void on_alrm(int sig)
{
	(void)sig;
	alrm_count++;
}

static void set(int sig, void (*handler)(int), void (*action)(int, siginfo_t *, void *), int flags,
		const int *mask, int nmask)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	if (action)
		sa.sa_sigaction = action;
	else
		sa.sa_handler = handler;
	sa.sa_flags = flags;
	sigemptyset(&sa.sa_mask);
	for (int i = 0; i < nmask; i++)
		sigaddset(&sa.sa_mask, mask[i]);
	if (sigaction(sig, &sa, NULL) < 0)
		wl_die("sigaction");
}

/* mask_bits packs a sigset into the 64 bits the kernel keeps. */
static unsigned long long mask_bits(const sigset_t *s)
{
	unsigned long long bits = 0;
	for (int sig = 1; sig <= 64; sig++)
		if (sigismember(s, sig) == 1)
			bits |= 1ULL << (sig - 1);
	return bits;
}

static int watched[5];
static struct sigaction before[5];

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int rt = rtsig();
	int m1[] = { SIGINT }, m2[] = { SIGTERM, SIGHUP }, m3[] = { SIGQUIT };
	set(SIGUSR1, on_usr1, NULL, SA_RESTART, m1, 1);
	set(SIGUSR2, NULL, on_usr2, SA_SIGINFO, m2, 2);
	set(rt, NULL, on_rt, SA_SIGINFO | SA_NODEFER, m3, 1);
	set(SIGALRM, on_alrm, NULL, SA_RESTART, NULL, 0);
	set(SIGPIPE, SIG_IGN, NULL, 0, NULL, 0);
	watched[0] = SIGUSR1, watched[1] = SIGUSR2, watched[2] = rt, watched[3] = SIGALRM, watched[4] = SIGPIPE;
	for (int i = 0; i < 5; i++)
		sigaction(watched[i], NULL, &before[i]);

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGUSR2);
	sigaddset(&block, SIGWINCH);
	if (sigprocmask(SIG_BLOCK, &block, NULL) < 0)
		wl_die("sigprocmask");
	union sigval v = { .sival_int = USR2_VALUE };
	if (sigqueue(getpid(), SIGUSR2, v) < 0)
		wl_die("sigqueue");
	struct itimerval it = { .it_interval = { 2, 0 }, .it_value = { 2, 0 } };
	if (setitimer(ITIMER_REAL, &it, NULL) < 0)
		wl_die("setitimer");
	sigset_t blocked = blocked_now();

	char line[4096];
	size_t off = 0;
	for (int i = 0; i < 5; i++)
		off += snprintf(line + off, sizeof(line) - off, "sig%d handler %p flags %#x mask %#llx\n", watched[i],
				(void *)before[i].sa_handler, before[i].sa_flags, mask_bits(&before[i].sa_mask));
	wl_ready("pid %d\nblocked %#llx\n%s", getpid(), mask_bits(&blocked), line);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	for (int i = 0; i < 5; i++) {
		struct sigaction now;
		sigaction(watched[i], NULL, &now);
		const struct sigaction *b = &before[i];
		if (now.sa_handler != b->sa_handler || now.sa_flags != b->sa_flags ||
		    mask_bits(&now.sa_mask) != mask_bits(&b->sa_mask) || now.sa_restorer != b->sa_restorer)
			wl_fail("signal %d: sigaction is handler %p flags %#x mask %#llx restorer %p, was %p %#x %#llx %p",
				watched[i], (void *)now.sa_handler, now.sa_flags, mask_bits(&now.sa_mask),
				(void *)now.sa_restorer, (void *)b->sa_handler, b->sa_flags,
				mask_bits(&b->sa_mask), (void *)b->sa_restorer);
	}
	sigset_t now_blocked = blocked_now();
	unsigned long long want_blocked = wl_saved_num("blocked");
	if (mask_bits(&now_blocked) != want_blocked)
		wl_fail("blocked mask is %#llx, was %#llx", mask_bits(&now_blocked), want_blocked);

	sigset_t pending;
	sigpending(&pending);
	if (!sigismember(&pending, SIGUSR2))
		wl_fail("SIGUSR2 is not pending (pending %#llx)", mask_bits(&pending));
	struct itimerval cur;
	getitimer(ITIMER_REAL, &cur);
	if (cur.it_interval.tv_sec != 2 || cur.it_interval.tv_usec != 0)
		wl_fail("ITIMER_REAL interval is %ld.%06ld s, want 2 s", (long)cur.it_interval.tv_sec,
			(long)cur.it_interval.tv_usec);
	if ((cur.it_value.tv_sec == 0 && cur.it_value.tv_usec == 0) || cur.it_value.tv_sec > 2)
		wl_fail("ITIMER_REAL value is %ld.%06ld s, want armed within 2 s", (long)cur.it_value.tv_sec,
			(long)cur.it_value.tv_usec);

	if (usr2_count != 0)
		wl_fail("SIGUSR2 was delivered while blocked");
	sigset_t unblock;
	sigemptyset(&unblock);
	sigaddset(&unblock, SIGUSR2);
	sigprocmask(SIG_UNBLOCK, &unblock, NULL);
	if (usr2_count != 1)
		wl_fail("unblocking SIGUSR2 delivered it %d times, want once", (int)usr2_count);
	else {
		if (usr2_value != USR2_VALUE)
			wl_fail("SIGUSR2 si_value %#x, want %#x", usr2_value, USR2_VALUE);
		if (usr2_code != SI_QUEUE)
			wl_fail("SIGUSR2 si_code %d, want SI_QUEUE", usr2_code);
		if (usr2_pid != getpid())
			wl_fail("SIGUSR2 si_pid %d, want %d", usr2_pid, getpid());
		if (!usr2_mask_ok)
			wl_fail("SIGUSR2 handler ran without its sa_mask {SIGTERM, SIGHUP, SIGUSR2} blocked");
	}

	raise(SIGUSR1);
	if (usr1_count != 1 || !usr1_mask_ok)
		wl_fail("SIGUSR1: handler ran %d times, mask applied %d", (int)usr1_count, usr1_mask_ok);
	union sigval rv = { .sival_int = RT_VALUE };
	sigqueue(getpid(), rt, rv);
	if (rt_count != 1 || rt_value != RT_VALUE || !rt_mask_ok)
		wl_fail("SIGRTMIN+2: handler ran %d times, value %d, mask as set %d", (int)rt_count, rt_value, rt_mask_ok);

	int alarms = alrm_count;
	double deadline = wl_now() + 5;
	while (alrm_count == alarms && wl_now() < deadline)
		wl_sleep_ms(10);
	if (alrm_count == alarms)
		wl_fail("no SIGALRM within 5 s of restore from the 2 s interval timer");

	return wl_finish();
}
