/*
 * amx MODE: a process given AMX's tile data (ARCH_REQ_XCOMP_PERM), on a
 * CPU with AMX. The instructions are spelled as bytes: gcc 12 has them
 * only with -mamx-tile.
 *
 *   perm   the process uses its tiles and releases them (TILERELEASE)
 *          before it is dumped; after restore it must still have the
 *          permission and use its tiles again (without the permission
 *          the first AMX instruction kills it with SIGILL, reported as
 *          a failure by the handler below);
 *   inuse  the tiles stay configured while it waits: ctcr must refuse
 *          the dump. Asked to check without having been dumped, it
 *          finds its tile configuration intact.
 */
#include "workload.h"

#include <signal.h>
#include <sys/syscall.h>

#define ARCH_GET_XCOMP_PERM 0x1022
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static unsigned char cfg[64] __attribute__((aligned(64)));

static void ldtilecfg(const void *c) { __asm__ volatile(".byte 0xc4,0xe2,0x78,0x49,0x00" ::"a"(c) : "memory"); }
static void sttilecfg(void *c) { __asm__ volatile(".byte 0xc4,0xe2,0x79,0x49,0x00" ::"a"(c) : "memory"); }
static void tilezero0(void) { __asm__ volatile(".byte 0xc4,0xe2,0x7b,0x49,0xc0" ::: "memory"); }
static void tilerelease(void) { __asm__ volatile(".byte 0xc4,0xe2,0x78,0x49,0xc0" ::: "memory"); }

static void on_sigill(int sig)
{
	(void)sig;
	static const char msg[] = "FAIL: SIGILL at an AMX instruction: the process lost its AMX permission";
	int fd = openat(AT_FDCWD, "result", O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd >= 0 && write(fd, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(2);
}

static unsigned long perm(void)
{
	unsigned long p = 0;
	if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_PERM, &p) != 0)
		wl_die("ARCH_GET_XCOMP_PERM");
	return p;
}

/* use configures tile 0 as 16 rows of 64 bytes and zeroes it. */
static void use(void)
{
	memset(cfg, 0, sizeof(cfg));
	cfg[0] = 1;   /* palette 1 */
	cfg[16] = 64; /* tile 0: bytes per row */
	cfg[48] = 16; /* tile 0: rows */
	ldtilecfg(cfg);
	tilezero0();
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	const char *mode = argc > 2 ? argv[2] : "perm";
	if (chdir(wl_dir) != 0)
		wl_die("chdir");
	signal(SIGILL, on_sigill);
	if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
		wl_die("ARCH_REQ_XCOMP_PERM");
	unsigned long had = perm();
	if (!(had & (1UL << XFEATURE_XTILEDATA)))
		wl_die("no AMX permission after ARCH_REQ_XCOMP_PERM");
	use();
	if (strcmp(mode, "inuse") != 0)
		tilerelease();
	wl_ready("permitted %#lx\n", had);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (strcmp(mode, "inuse") == 0) {
		unsigned char now[64] __attribute__((aligned(64)));
		sttilecfg(now);
		if (memcmp(now, cfg, sizeof(cfg)) != 0)
			wl_fail("the tile configuration changed");
		tilerelease();
		return wl_finish();
	}
	unsigned long now = perm();
	if (now != had)
		wl_fail("XSAVE features permitted %#lx, want %#lx", now, had);
	use();
	unsigned char got[64] __attribute__((aligned(64)));
	sttilecfg(got);
	if (memcmp(got, cfg, sizeof(cfg)) != 0)
		wl_fail("the tile configuration read back differs from the one loaded");
	tilerelease();
	return wl_finish();
}
