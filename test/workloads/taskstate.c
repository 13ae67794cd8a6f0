/*
 * taskstate: the per-task state of issue 2 that no other workload covers.
 *
 * Sets credentials (saved uid, effective and saved gid, supplementary
 * groups, capability sets, bounding set, securebits, no_new_privs),
 * resource limits, personality, scheduling policy and nice value,
 * parent-death signal, dumpable, the task name, an alternate signal
 * stack and a virtual interval timer, and loads known values into the
 * general purpose, SSE/AVX (and AVX-512 where the CPU has it) registers,
 * which it holds in a loop that makes only raw syscalls (the kernel
 * keeps every vector register across a syscall). After restore it checks
 * every one of them, and that /proc/self/exe still names its binary.
 */
#include "workload.h"

#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <linux/capability.h>
#include <linux/securebits.h>

static char altstack[64 * 1024];

/* Register images: 16 ymm (32 bytes), 16 upper zmm (64 bytes), 7 opmasks,
 * and r12..r15. */
struct regs {
	uint8_t ymm[16][32];
	uint8_t zmm[16][64];
	uint64_t k[8];
	uint64_t gp[4];
};

static struct regs want, got;

static int capget2(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	return syscall(SYS_capget, &h, d);
}

static int capset2(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	return syscall(SYS_capset, &h, d);
}

/* hold loads want into the registers, polls for DIR/check with raw
 * syscalls only, then stores the registers into got. */
static struct timespec hold_ts __attribute__((used)) = {0, 10 * 1000 * 1000};
static char hold_check[4096];

static void hold(int avx512)
{
	register uint64_t r12 asm("r12") = want.gp[0];
	register uint64_t r13 asm("r13") = want.gp[1];
	register uint64_t r14 asm("r14") = want.gp[2];
	register uint64_t r15 asm("r15") = want.gp[3];
	asm volatile(
		"vmovdqu want+0(%%rip), %%ymm0\n\t"
		"vmovdqu want+32(%%rip), %%ymm1\n\t"
		"vmovdqu want+64(%%rip), %%ymm2\n\t"
		"vmovdqu want+96(%%rip), %%ymm3\n\t"
		"vmovdqu want+128(%%rip), %%ymm4\n\t"
		"vmovdqu want+160(%%rip), %%ymm5\n\t"
		"vmovdqu want+192(%%rip), %%ymm6\n\t"
		"vmovdqu want+224(%%rip), %%ymm7\n\t"
		"vmovdqu want+256(%%rip), %%ymm8\n\t"
		"vmovdqu want+288(%%rip), %%ymm9\n\t"
		"vmovdqu want+320(%%rip), %%ymm10\n\t"
		"vmovdqu want+352(%%rip), %%ymm11\n\t"
		"vmovdqu want+384(%%rip), %%ymm12\n\t"
		"vmovdqu want+416(%%rip), %%ymm13\n\t"
		"vmovdqu want+448(%%rip), %%ymm14\n\t"
		"vmovdqu want+480(%%rip), %%ymm15\n\t"
		"testl %[avx512], %[avx512]\n\t"
		"jz 1f\n\t"
		"vmovdqu64 want+512(%%rip), %%zmm16\n\t"
		"vmovdqu64 want+576(%%rip), %%zmm17\n\t"
		"vmovdqu64 want+640(%%rip), %%zmm18\n\t"
		"vmovdqu64 want+704(%%rip), %%zmm19\n\t"
		"vmovdqu64 want+768(%%rip), %%zmm20\n\t"
		"vmovdqu64 want+832(%%rip), %%zmm21\n\t"
		"vmovdqu64 want+896(%%rip), %%zmm22\n\t"
		"vmovdqu64 want+960(%%rip), %%zmm23\n\t"
		"vmovdqu64 want+1024(%%rip), %%zmm24\n\t"
		"vmovdqu64 want+1088(%%rip), %%zmm25\n\t"
		"vmovdqu64 want+1152(%%rip), %%zmm26\n\t"
		"vmovdqu64 want+1216(%%rip), %%zmm27\n\t"
		"vmovdqu64 want+1280(%%rip), %%zmm28\n\t"
		"vmovdqu64 want+1344(%%rip), %%zmm29\n\t"
		"vmovdqu64 want+1408(%%rip), %%zmm30\n\t"
		"vmovdqu64 want+1472(%%rip), %%zmm31\n\t"
		"kmovq want+1544(%%rip), %%k1\n\t"
		"kmovq want+1552(%%rip), %%k2\n\t"
		"kmovq want+1560(%%rip), %%k3\n\t"
		"kmovq want+1568(%%rip), %%k4\n\t"
		"kmovq want+1576(%%rip), %%k5\n\t"
		"kmovq want+1584(%%rip), %%k6\n\t"
		"kmovq want+1592(%%rip), %%k7\n\t"
		"1:\n\t"
		/* nanosleep(&hold_ts, NULL) */
		"mov $35, %%eax\n\t"
		"lea hold_ts(%%rip), %%rdi\n\t"
		"xor %%esi, %%esi\n\t"
		"syscall\n\t"
		/* faccessat(AT_FDCWD, hold_check, F_OK, 0) */
		"mov $269, %%eax\n\t"
		"mov $-100, %%rdi\n\t"
		"lea hold_check(%%rip), %%rsi\n\t"
		"xor %%edx, %%edx\n\t"
		"xor %%r10d, %%r10d\n\t"
		"syscall\n\t"
		"test %%rax, %%rax\n\t"
		"jnz 1b\n\t"
		"vmovdqu %%ymm0, got+0(%%rip)\n\t"
		"vmovdqu %%ymm1, got+32(%%rip)\n\t"
		"vmovdqu %%ymm2, got+64(%%rip)\n\t"
		"vmovdqu %%ymm3, got+96(%%rip)\n\t"
		"vmovdqu %%ymm4, got+128(%%rip)\n\t"
		"vmovdqu %%ymm5, got+160(%%rip)\n\t"
		"vmovdqu %%ymm6, got+192(%%rip)\n\t"
		"vmovdqu %%ymm7, got+224(%%rip)\n\t"
		"vmovdqu %%ymm8, got+256(%%rip)\n\t"
		"vmovdqu %%ymm9, got+288(%%rip)\n\t"
		"vmovdqu %%ymm10, got+320(%%rip)\n\t"
		"vmovdqu %%ymm11, got+352(%%rip)\n\t"
		"vmovdqu %%ymm12, got+384(%%rip)\n\t"
		"vmovdqu %%ymm13, got+416(%%rip)\n\t"
		"vmovdqu %%ymm14, got+448(%%rip)\n\t"
		"vmovdqu %%ymm15, got+480(%%rip)\n\t"
		"testl %[avx512], %[avx512]\n\t"
		"jz 2f\n\t"
		"vmovdqu64 %%zmm16, got+512(%%rip)\n\t"
		"vmovdqu64 %%zmm17, got+576(%%rip)\n\t"
		"vmovdqu64 %%zmm18, got+640(%%rip)\n\t"
		"vmovdqu64 %%zmm19, got+704(%%rip)\n\t"
		"vmovdqu64 %%zmm20, got+768(%%rip)\n\t"
		"vmovdqu64 %%zmm21, got+832(%%rip)\n\t"
		"vmovdqu64 %%zmm22, got+896(%%rip)\n\t"
		"vmovdqu64 %%zmm23, got+960(%%rip)\n\t"
		"vmovdqu64 %%zmm24, got+1024(%%rip)\n\t"
		"vmovdqu64 %%zmm25, got+1088(%%rip)\n\t"
		"vmovdqu64 %%zmm26, got+1152(%%rip)\n\t"
		"vmovdqu64 %%zmm27, got+1216(%%rip)\n\t"
		"vmovdqu64 %%zmm28, got+1280(%%rip)\n\t"
		"vmovdqu64 %%zmm29, got+1344(%%rip)\n\t"
		"vmovdqu64 %%zmm30, got+1408(%%rip)\n\t"
		"vmovdqu64 %%zmm31, got+1472(%%rip)\n\t"
		"kmovq %%k1, got+1544(%%rip)\n\t"
		"kmovq %%k2, got+1552(%%rip)\n\t"
		"kmovq %%k3, got+1560(%%rip)\n\t"
		"kmovq %%k4, got+1568(%%rip)\n\t"
		"kmovq %%k5, got+1576(%%rip)\n\t"
		"kmovq %%k6, got+1584(%%rip)\n\t"
		"kmovq %%k7, got+1592(%%rip)\n\t"
		"2:\n\t"
		"vzeroupper\n\t"
		: "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15)
		: [avx512] "r"(avx512)
		: "rax", "rcx", "rdx", "rdi", "rsi", "r8", "r9", "r10", "r11", "memory", "cc",
		  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
	got.gp[0] = r12;
	got.gp[1] = r13;
	got.gp[2] = r14;
	got.gp[3] = r15;
}

static void check_eq(const char *what, long want_v, long got_v)
{
	if (want_v != got_v)
		wl_fail("%s is %ld, was %ld", what, got_v, want_v);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	wl_path(hold_check, sizeof(hold_check), "check");
	int avx512 = __builtin_cpu_supports("avx512f") != 0;
	uint64_t seed = 0x9e3779b97f4a7c15ULL ^ (uint64_t)getpid();
	uint8_t *p = (uint8_t *)&want;
	for (size_t i = 0; i < sizeof(want); i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		p[i] = (uint8_t)seed;
	}

	/* Scheduling, limits, personality. */
	if (setpriority(PRIO_PROCESS, 0, 7) < 0)
		wl_die("setpriority");
	struct sched_param sp = {0};
	if (sched_setscheduler(0, SCHED_BATCH, &sp) < 0)
		wl_die("sched_setscheduler");
	struct rlimit nofile = {512, 1000};
	if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
		wl_die("setrlimit");
	struct rlimit stack;
	getrlimit(RLIMIT_STACK, &stack);
	stack.rlim_cur = 4 << 20;
	if (setrlimit(RLIMIT_STACK, &stack) < 0)
		wl_die("setrlimit stack");
	if (personality(PER_LINUX | ADDR_NO_RANDOMIZE) < 0)
		wl_die("personality");

	/* prctl state. */
	if (prctl(PR_SET_NAME, "tsk-state", 0, 0, 0) < 0)
		wl_die("prctl");
	stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack), .ss_flags = 0};
	if (sigaltstack(&ss, NULL) < 0)
		wl_die("sigaltstack");
	struct itimerval vt = {{3600, 0}, {3600, 0}};
	if (setitimer(ITIMER_VIRTUAL, &vt, NULL) < 0)
		wl_die("setitimer");

	/* Credentials: stay root for real and effective uid (the workload
	 * must still write its files) but change everything else. */
	gid_t groups[] = {10, 20, 30000};
	if (setgroups(3, groups) < 0)
		wl_die("setgroups");
	if (setresgid(0, 1001, 1002) < 0)
		wl_die("setresgid");
	if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0) < 0)
		wl_die("capbset_drop");
	if (prctl(PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP, 0, 0, 0) < 0)
		wl_die("securebits");
	if (setresuid(0, 0, 1000) < 0)
		wl_die("setresuid");
	struct __user_cap_data_struct caps[2];
	if (capget2(caps) < 0)
		wl_die("capget");
	caps[0].effective &= ~(1u << CAP_SYS_BOOT | 1u << CAP_SYS_TIME);
	caps[0].permitted &= ~(1u << CAP_SYS_BOOT | 1u << CAP_SYS_TIME);
	caps[0].inheritable = 1u << CAP_NET_RAW;
	caps[1].inheritable = 0;
	if (capset2(caps) < 0)
		wl_die("capset");
	if (capget2(caps) < 0)
		wl_die("capget");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		wl_die("no_new_privs");
	/* A change of credentials resets both of these. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGWINCH, 0, 0, 0) < 0)
		wl_die("dumpable/pdeathsig");

	/* CPU affinity, I/O priority and timer slack (sched.json). */
	int last_cpu = sysconf(_SC_NPROCESSORS_ONLN) - 1;
	cpu_set_t cpus;
	CPU_ZERO(&cpus);
	CPU_SET(last_cpu, &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus) < 0)
		wl_die("sched_setaffinity");
	if (syscall(SYS_ioprio_set, 1 /* IOPRIO_WHO_PROCESS */, 0, (2 << 13) | 6 /* best effort, level 6 */) < 0)
		wl_die("ioprio_set");
	if (prctl(PR_SET_TIMERSLACK, 123456, 0, 0, 0) < 0)
		wl_die("timer slack");

	/* The OOM killer's adjustment, which ctcr writes from outside. */
	int ofd = open("/proc/self/oom_score_adj", O_WRONLY);
	if (ofd < 0 || write(ofd, "123", 3) != 3 || close(ofd) < 0)
		wl_die("oom_score_adj");

	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n < 0)
		wl_die("readlink exe");
	exe[n] = 0;
	wl_ready("pid=%d\navx512=%d\n", getpid(), avx512);

	hold(avx512);

	/* Registers. */
	if (memcmp(want.ymm, got.ymm, sizeof(want.ymm)))
		wl_fail("ymm registers differ");
	if (avx512 && memcmp(want.zmm, got.zmm, sizeof(want.zmm)))
		wl_fail("zmm16-31 registers differ");
	if (avx512 && memcmp(&want.k[1], &got.k[1], 7 * sizeof(uint64_t)))
		wl_fail("opmask registers differ");
	if (memcmp(want.gp, got.gp, sizeof(want.gp)))
		wl_fail("r12-r15 differ");

	/* Everything else. */
	errno = 0;
	check_eq("nice", 7, getpriority(PRIO_PROCESS, 0));
	check_eq("scheduling policy", SCHED_BATCH, sched_getscheduler(0));
	struct rlimit r;
	getrlimit(RLIMIT_NOFILE, &r);
	check_eq("RLIMIT_NOFILE soft", 512, r.rlim_cur);
	check_eq("RLIMIT_NOFILE hard", 1000, r.rlim_max);
	getrlimit(RLIMIT_STACK, &r);
	check_eq("RLIMIT_STACK soft", 4 << 20, r.rlim_cur);
	check_eq("personality", PER_LINUX | ADDR_NO_RANDOMIZE, personality(0xffffffff));
	char name[32] = {0};
	prctl(PR_GET_NAME, name, 0, 0, 0);
	if (strcmp(name, "tsk-state"))
		wl_fail("name is %s", name);
	int pd = 0;
	prctl(PR_GET_PDEATHSIG, &pd, 0, 0, 0);
	check_eq("pdeathsig", SIGWINCH, pd);
	check_eq("dumpable", 0, prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
	check_eq("no_new_privs", 1, prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
	char oom[16] = {0};
	ofd = open("/proc/self/oom_score_adj", O_RDONLY);
	if (ofd < 0 || read(ofd, oom, sizeof(oom) - 1) <= 0)
		wl_fail("read oom_score_adj: %s", strerror(errno));
	if (ofd >= 0)
		close(ofd);
	check_eq("oom_score_adj", 123, atoi(oom));
	cpu_set_t got_cpus;
	if (sched_getaffinity(0, sizeof(got_cpus), &got_cpus) < 0)
		wl_fail("sched_getaffinity: %s", strerror(errno));
	int lastc = sysconf(_SC_NPROCESSORS_ONLN) - 1;
	check_eq("CPUs in the affinity", 1, CPU_COUNT(&got_cpus));
	check_eq("the CPU of the affinity", 1, CPU_ISSET(lastc, &got_cpus));
	check_eq("I/O priority", (2 << 13) | 6, syscall(SYS_ioprio_get, 1, 0));
	check_eq("timer slack", 123456, prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0));
	check_eq("securebits", SECBIT_NO_SETUID_FIXUP, prctl(PR_GET_SECUREBITS, 0, 0, 0, 0));
	check_eq("CAP_SYS_BOOT in the bounding set", 0, prctl(PR_CAPBSET_READ, CAP_SYS_BOOT, 0, 0, 0));
	check_eq("CAP_KILL in the bounding set", 1, prctl(PR_CAPBSET_READ, CAP_KILL, 0, 0, 0));
	stack_t cur;
	sigaltstack(NULL, &cur);
	if (cur.ss_sp != altstack || cur.ss_size != sizeof(altstack))
		wl_fail("sigaltstack is %p+%zu, was %p+%zu", cur.ss_sp, cur.ss_size, (void *)altstack, sizeof(altstack));
	struct itimerval it;
	getitimer(ITIMER_VIRTUAL, &it);
	if (it.it_interval.tv_sec != 3600 || it.it_value.tv_sec == 0)
		wl_fail("virtual itimer interval %ld value %ld", (long)it.it_interval.tv_sec, (long)it.it_value.tv_sec);
	uid_t ru, eu, su;
	gid_t rg, eg, sg;
	getresuid(&ru, &eu, &su);
	getresgid(&rg, &eg, &sg);
	check_eq("real uid", 0, ru);
	check_eq("effective uid", 0, eu);
	check_eq("saved uid", 1000, su);
	check_eq("real gid", 0, rg);
	check_eq("effective gid", 1001, eg);
	check_eq("saved gid", 1002, sg);
	gid_t gs[16];
	int ng = getgroups(16, gs);
	if (ng != 3 || gs[0] != 10 || gs[1] != 20 || gs[2] != 30000)
		wl_fail("supplementary groups differ (%d of them)", ng);
	struct __user_cap_data_struct now[2];
	if (capget2(now) < 0)
		wl_die("capget");
	for (int i = 0; i < 2; i++) {
		check_eq("effective capabilities", caps[i].effective, now[i].effective);
		check_eq("permitted capabilities", caps[i].permitted, now[i].permitted);
		check_eq("inheritable capabilities", caps[i].inheritable, now[i].inheritable);
	}
	char exe2[4096];
	n = readlink("/proc/self/exe", exe2, sizeof(exe2) - 1);
	if (n < 0)
		wl_die("readlink exe");
	exe2[n] = 0;
	if (strcmp(exe, exe2))
		wl_fail("/proc/self/exe is %s, was %s", exe2, exe);
	return wl_finish();
}
