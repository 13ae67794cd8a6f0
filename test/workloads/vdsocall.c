/*
 * vdsocall: calls the vDSO's functions all the time, through the C
 * library, which looked them up once at startup: clock_gettime
 * (realtime and monotonic), gettimeofday, time and sched_getcpu. Each
 * result is compared with the system call's own. After a restore whose
 * vDSO sits behind a proxy (restore --vdso-proxy, or a kernel whose vDSO
 * differs), the calls go through the proxy's jumps; the check also wants
 * AT_SYSINFO_EHDR to name a vDSO (an ELF image) and prints where it is.
 */
#include "workload.h"

#include <sched.h>
#include <stdint.h>
#include <sys/auxv.h>
#include <sys/syscall.h>
#include <sys/time.h>

static long long ns_of(const struct timespec *ts)
{
	return (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec;
}

/* call_all calls each function once and compares it with the syscall. */
static void call_all(unsigned long long *calls)
{
	struct timespec v, k;
	clockid_t clocks[] = { CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME };
	for (size_t i = 0; i < sizeof(clocks) / sizeof(clocks[0]); i++) {
		if (syscall(SYS_clock_gettime, clocks[i], &k) < 0 || clock_gettime(clocks[i], &v) < 0)
			wl_die("clock_gettime");
		long long d = ns_of(&v) - ns_of(&k);
		if (d < 0 || d > 2000000000LL)
			wl_fail("clock %d: the vDSO says %lld ns, the system call %lld ns before", (int)clocks[i], ns_of(&v),
				ns_of(&k));
	}
	struct timeval tv;
	if (gettimeofday(&tv, NULL) < 0)
		wl_die("gettimeofday");
	long long t = time(NULL);
	if (syscall(SYS_clock_gettime, CLOCK_REALTIME, &k) < 0)
		wl_die("clock_gettime");
	if (tv.tv_sec > k.tv_sec || k.tv_sec - tv.tv_sec > 2 || t > k.tv_sec || k.tv_sec - t > 2)
		wl_fail("gettimeofday says %lld s, time %lld s, the system call %lld s", (long long)tv.tv_sec, t,
			(long long)k.tv_sec);
	int cpu = sched_getcpu();
	unsigned kcpu = 0;
	if (cpu < 0 || syscall(SYS_getcpu, &kcpu, NULL, NULL) < 0)
		wl_die("getcpu");
	if (cpu >= CPU_SETSIZE)
		wl_fail("sched_getcpu says %d", cpu);
	*calls += 6;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	unsigned long long calls = 0;
	call_all(&calls);
	wl_ready("pid %d\nvdso %#lx\n", getpid(), getauxval(AT_SYSINFO_EHDR));
	while (!wl_check_requested()) {
		for (int i = 0; i < 100; i++)
			call_all(&calls);
		wl_sleep_ms(1);
	}
	for (int i = 0; i < 1000; i++)
		call_all(&calls);
	const unsigned char *ehdr = (const unsigned char *)getauxval(AT_SYSINFO_EHDR);
	if (ehdr == NULL || memcmp(ehdr, "\177ELF", 4) != 0)
		wl_fail("AT_SYSINFO_EHDR (%p) names no ELF image", (const void *)ehdr);
	wl_printf("%llu calls, vdso %p\n", calls, (const void *)ehdr);
	return wl_finish();
}
