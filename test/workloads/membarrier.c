/*
 * membarrier: a process's membarrier registrations.
 *
 * The workload registers for every expedited membarrier this kernel
 * offers (global, private, private sync-core, private rseq) and records
 * MEMBARRIER_CMD_GET_REGISTRATIONS. After restore the same registrations
 * must be there, and a private expedited barrier, which the kernel
 * refuses with EPERM to a process that did not register, must work.
 */
#include "workload.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>

#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

static long mb(int cmd)
{
	return syscall(SYS_membarrier, cmd, 0, 0);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	long offered = mb(MEMBARRIER_CMD_QUERY);
	if (offered < 0)
		wl_die("membarrier query");
	static const int regs[] = {
		MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
		MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
		MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_SYNC_CORE,
		MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
	};
	for (unsigned i = 0; i < sizeof(regs) / sizeof(regs[0]); i++)
		if ((offered & regs[i]) && mb(regs[i]) < 0)
			wl_die("membarrier register");
	long had = mb(MEMBARRIER_CMD_GET_REGISTRATIONS);
	if (had < 0)
		wl_die("MEMBARRIER_CMD_GET_REGISTRATIONS (Linux 6.3)");
	if (!(had & MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED))
		wl_die("no private expedited registration");
	wl_ready("registrations %#lx\n", had);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	long now = mb(MEMBARRIER_CMD_GET_REGISTRATIONS);
	if (now != had)
		wl_fail("membarrier registrations %#lx, want %#lx", now, had);
	if (mb(MEMBARRIER_CMD_PRIVATE_EXPEDITED) < 0)
		wl_fail("a private expedited barrier: %s", strerror(errno));
	return wl_finish();
}
