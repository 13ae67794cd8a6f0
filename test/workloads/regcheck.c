/*
 * regcheck MIB [NREGS]: what a task must find intact after ctcr was killed
 * in the middle of dumping it, at any instant.
 *
 *   main thread  MIB MiB of random memory (checksum), sleeping in
 *                nanosleep until DIR/check;
 *   NREGS (default 1) threads "regs", each with its own values: each keeps known values in r12-r15, rbx and xmm8-xmm15 (and,
 *                with AVX, the upper halves of ymm8-ymm15) across blocking
 *                system calls (poll with a 1 ms timeout) made from inside
 *                one asm block, and compares them after each block: any
 *                change, as a dying tracer's registers or FPU state would
 *                cause, fails at once;
 *   a SIGUSR1 handler counts; the test may send signals.
 *
 * It writes "rounds N" lines to DIR/out so a test can see it run on. On
 * DIR/check it verifies memory and that the register thread ran and never
 * saw a difference.
 */
#include "workload.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>

static volatile sig_atomic_t usr1;
static volatile uint64_t rounds;
static volatile int reg_failed;
static int have_avx;

static void on_usr1(int sig)
{
	(void)sig;
	usr1++;
}

static uint64_t next(uint64_t *x)
{
	*x ^= *x >> 12;
	*x ^= *x << 25;
	*x ^= *x >> 27;
	return *x * 0x2545F4914F6CDD1DULL;
}

static uint64_t checksum(const uint64_t *mem, size_t words)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (size_t i = 0; i < words; i++)
		h = (h ^ mem[i]) * 0x100000001b3ULL;
	return h;
}

/* io: gp_in[5] at 0, gp_out[5] at 40, v_in[256] at 80, v_out[256] at 336. */
struct io {
	uint64_t gp_in[5], gp_out[5];
	uint8_t v_in[256], v_out[256];
};

/* One block: load the patterns, make 5 polls of 1 ms, store what the
 * registers hold then. */
static void block(struct io *io)
{
	if (have_avx) {
		__asm__ volatile(
			"mov 0(%0), %%r12\n\tmov 8(%0), %%r13\n\tmov 16(%0), %%r14\n\tmov 24(%0), %%r15\n\tmov 32(%0), %%rbx\n\t"
			"vmovdqu 80(%0), %%ymm8\n\tvmovdqu 112(%0), %%ymm9\n\tvmovdqu 144(%0), %%ymm10\n\tvmovdqu 176(%0), %%ymm11\n\t"
			"vmovdqu 208(%0), %%ymm12\n\tvmovdqu 240(%0), %%ymm13\n\tvmovdqu 272(%0), %%ymm14\n\tvmovdqu 304(%0), %%ymm15\n\t"
			"mov $5, %%r8d\n"
			"1:\n\tmov $7, %%eax\n\txor %%edi, %%edi\n\txor %%esi, %%esi\n\tmov $1, %%edx\n\tsyscall\n\t"
			"dec %%r8d\n\tjnz 1b\n\t"
			"mov %%r12, 40(%0)\n\tmov %%r13, 48(%0)\n\tmov %%r14, 56(%0)\n\tmov %%r15, 64(%0)\n\tmov %%rbx, 72(%0)\n\t"
			"vmovdqu %%ymm8, 336(%0)\n\tvmovdqu %%ymm9, 368(%0)\n\tvmovdqu %%ymm10, 400(%0)\n\tvmovdqu %%ymm11, 432(%0)\n\t"
			"vmovdqu %%ymm12, 464(%0)\n\tvmovdqu %%ymm13, 496(%0)\n\tvmovdqu %%ymm14, 528(%0)\n\tvmovdqu %%ymm15, 560(%0)\n\t"
			"vzeroupper"
			:
			: "r"(io)
			: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r11", "r12", "r13", "r14", "r15", "rbx",
			  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
	} else {
		__asm__ volatile(
			"mov 0(%0), %%r12\n\tmov 8(%0), %%r13\n\tmov 16(%0), %%r14\n\tmov 24(%0), %%r15\n\tmov 32(%0), %%rbx\n\t"
			"movdqu 80(%0), %%xmm8\n\tmovdqu 112(%0), %%xmm9\n\tmovdqu 144(%0), %%xmm10\n\tmovdqu 176(%0), %%xmm11\n\t"
			"movdqu 208(%0), %%xmm12\n\tmovdqu 240(%0), %%xmm13\n\tmovdqu 272(%0), %%xmm14\n\tmovdqu 304(%0), %%xmm15\n\t"
			"mov $5, %%r8d\n"
			"1:\n\tmov $7, %%eax\n\txor %%edi, %%edi\n\txor %%esi, %%esi\n\tmov $1, %%edx\n\tsyscall\n\t"
			"dec %%r8d\n\tjnz 1b\n\t"
			"mov %%r12, 40(%0)\n\tmov %%r13, 48(%0)\n\tmov %%r14, 56(%0)\n\tmov %%r15, 64(%0)\n\tmov %%rbx, 72(%0)\n\t"
			"movdqu %%xmm8, 336(%0)\n\tmovdqu %%xmm9, 368(%0)\n\tmovdqu %%xmm10, 400(%0)\n\tmovdqu %%xmm11, 432(%0)\n\t"
			"movdqu %%xmm12, 464(%0)\n\tmovdqu %%xmm13, 496(%0)\n\tmovdqu %%xmm14, 528(%0)\n\tmovdqu %%xmm15, 560(%0)\n\t"
			:
			: "r"(io)
			: "rax", "rcx", "rdx", "rsi", "rdi", "r8", "r11", "r12", "r13", "r14", "r15", "rbx",
			  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
	}
}

static void *regs_thread(void *arg)
{
	uint64_t idx = (uint64_t)(uintptr_t)arg;
	pthread_setname_np(pthread_self(), "regs");
	uint64_t x = 0x1234567 ^ (uint64_t)getpid() ^ (idx * 0x9E3779B97F4A7C15ULL);
	struct io *iop = calloc(1, sizeof(*iop));
	if (!iop)
		wl_die("calloc");
	uint64_t *gp_in = iop->gp_in, *gp_out = iop->gp_out;
	uint8_t *v_in = iop->v_in, *v_out = iop->v_out;
	for (;;) {
		for (int i = 0; i < 5; i++)
			gp_in[i] = next(&x);
		for (int i = 0; i < 256; i += 8) {
			uint64_t w = next(&x);
			memcpy(v_in + i, &w, 8);
		}
		memset(v_out, 0, sizeof(iop->v_out));
		block(iop);
		if (memcmp(gp_in, gp_out, sizeof(iop->gp_in)) != 0) {
			reg_failed = 1;
			wl_printf("general registers changed across system calls\n");
		}
		int width = have_avx ? 32 : 16;
		for (int r = 0; r < 8; r++)
			if (memcmp(v_in + 32 * r, v_out + 32 * r, width) != 0) {
				reg_failed = 1;
				wl_printf("vector register %d changed across system calls\n", 8 + r);
			}
		rounds++;
		if (rounds % 50 == 0)
			wl_printf("rounds %llu\n", (unsigned long long)rounds);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	__builtin_cpu_init();
	have_avx = __builtin_cpu_supports("avx");
	unsigned long mib = argc > 2 ? strtoul(argv[2], NULL, 0) : 64;
	size_t words = (mib << 20) / 8;
	uint64_t *mem = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		wl_die("mmap");
	uint64_t x = 0x9E3779B97F4A7C15ULL ^ (uint64_t)getpid();
	for (size_t i = 0; i < words; i++)
		mem[i] = next(&x);
	uint64_t sum = checksum(mem, words);

	struct sigaction sa = { .sa_handler = on_usr1 };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) < 0)
		wl_die("sigaction");
	unsigned long nregs = argc > 3 ? strtoul(argv[3], NULL, 0) : 1;
	for (unsigned long i = 0; i < nregs; i++) {
		pthread_t th;
		if (pthread_create(&th, NULL, regs_thread, (void *)(uintptr_t)i) != 0)
			wl_die("pthread_create");
	}
	while (rounds < 3)
		wl_sleep_ms(1);
	wl_ready("pid %d\navx %d\n", getpid(), have_avx);

	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (checksum(mem, words) != sum)
		wl_fail("memory checksum changed");
	uint64_t r0 = rounds;
	wl_sleep_ms(100);
	if (rounds == r0)
		wl_fail("the register thread no longer runs (rounds stuck at %llu)", (unsigned long long)r0);
	if (reg_failed)
		wl_fail("registers changed across system calls (see out)");
	return wl_finish();
}
