/*
 * sysvshm: SysV shared memory attached by a process and its child, in a
 * container's own IPC namespace:
 *   A  64 KiB, attached read-write by both (the child inherits it), its
 *      last 16 KiB made read-only with mprotect; the child answers every
 *      ping the parent writes into A with a pong: the two still share
 *      the segment after a restore;
 *   B  16 KiB, attached twice by the parent: read-write, and read-only
 *      elsewhere (the same pages seen through both);
 *   C  8 KiB, attached, then removed (IPC_RMID): it lives on while
 *      attached, marked so.
 * The check verifies every pattern, the protections (from
 * /proc/self/maps), C's mark, and a ping answered.
 */
#include "workload.h"

#include <signal.h>
#include <stdint.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define KB 1024UL

static void fill(volatile uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 31 + seed);
}

static long differs(volatile const uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (uint8_t)(i * 31 + seed))
			return (long)i;
	return -1;
}

/* prot_of returns the rwx letters of the mapping holding addr. */
static void prot_of(const void *addr, char out[4])
{
	strcpy(out, "???");
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char perms[8];
		if (sscanf(line, "%lx-%lx %7s", &s, &e, perms) == 3 && s <= (unsigned long)addr &&
		    (unsigned long)addr < e) {
			memcpy(out, perms, 3);
			break;
		}
	}
	fclose(f);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int a = shmget(IPC_PRIVATE, 64 * KB, IPC_CREAT | 0600);
	int b = shmget(IPC_PRIVATE, 16 * KB, IPC_CREAT | 0600);
	int c = shmget(IPC_PRIVATE, 8 * KB, IPC_CREAT | 0600);
	if (a < 0 || b < 0 || c < 0)
		wl_die("shmget");
	volatile uint8_t *pa = shmat(a, NULL, 0), *pb = shmat(b, NULL, 0), *pc = shmat(c, NULL, 0);
	volatile const uint8_t *pb2 = shmat(b, NULL, SHM_RDONLY);
	if (pa == (void *)-1 || pb == (void *)-1 || pc == (void *)-1 || pb2 == (void *)-1)
		wl_die("shmat");
	fill(pa + 64, 64 * KB - 64, 1);
	fill(pb, 16 * KB, 2);
	fill(pc, 8 * KB, 3);
	if (mprotect((void *)(pa + 48 * KB), 16 * KB, PROT_READ) < 0)
		wl_die("mprotect");
	if (shmctl(c, IPC_RMID, NULL) < 0)
		wl_die("IPC_RMID");
	volatile uint64_t *ping = (volatile uint64_t *)pa, *pong = ping + 1;
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		for (;;) {
			if (*pong != *ping)
				*pong = *ping;
			usleep(1000);
		}
	}
	wl_ready("pid %d\nchild %d\n", getpid(), (int)child);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	long w;
	if ((w = differs(pa + 64, 64 * KB - 64, 1)) >= 0)
		wl_fail("segment A differs at byte %ld", w + 64);
	if ((w = differs(pb, 16 * KB, 2)) >= 0)
		wl_fail("segment B differs at byte %ld", w);
	if ((w = differs(pb2, 16 * KB, 2)) >= 0)
		wl_fail("segment B read-only differs at byte %ld", w);
	if ((w = differs(pc, 8 * KB, 3)) >= 0)
		wl_fail("segment C differs at byte %ld", w);
	pb[100] = 0xab;
	if (pb2[100] != 0xab)
		wl_fail("B's two attachments are not the same pages");
	char pr[4];
	prot_of((const void *)pa, pr);
	if (strcmp(pr, "rw-") != 0)
		wl_fail("A's first 48 KiB are %s, want rw-", pr);
	prot_of((const void *)(pa + 48 * KB), pr);
	if (strcmp(pr, "r--") != 0)
		wl_fail("A's last 16 KiB are %s, want r--", pr);
	prot_of((const void *)pb2, pr);
	if (strcmp(pr, "r--") != 0)
		wl_fail("B's read-only attachment is %s, want r--", pr);
	struct shmid_ds ds;
	if (shmctl(c, IPC_STAT, &ds) < 0)
		wl_fail("segment C (removed while attached) is gone: %s", strerror(errno));
	else if (!(ds.shm_perm.mode & SHM_DEST))
		wl_fail("segment C is no longer marked removed (mode %#o)", ds.shm_perm.mode);
	*ping = *ping + 7;
	for (int i = 0; i < 2000 && *pong != *ping; i++)
		wl_sleep_ms(1);
	if (*pong != *ping)
		wl_fail("the child did not answer ping %llu (pong %llu): A is not shared any more",
			(unsigned long long)*ping, (unsigned long long)*pong);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	/* Not left behind in the IPC namespace (the host's, run outside a
	 * container). */
	shmctl(a, IPC_RMID, NULL);
	shmctl(b, IPC_RMID, NULL);
	wl_printf("ping %llu answered\n", (unsigned long long)*ping);
	return wl_finish();
}
