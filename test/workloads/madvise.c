/*
 * madvise: one anonymous mapping per madvise flag that smaps' VmFlags
 * shows (DONTFORK "dc", WIPEONFORK "wf", DONTDUMP "dd", HUGEPAGE "hg",
 * NOHUGEPAGE "nh", MERGEABLE "mg", SEQUENTIAL "sr", RANDOM "rr"), each
 * with a written page, and a private mapping of /dev/zero, which maps
 * names, with a written page.
 *
 * After restore each mapping shows its flag again (and MADV_WIPEONFORK
 * and MADV_DONTFORK still act: a child sees zeroes, or no mapping), its
 * page is intact, and the /dev/zero mapping still maps /dev/zero.
 */
#include "workload.h"

#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define PG 4096
#define NADV 8

static const int advice[NADV] = { MADV_DONTFORK, MADV_WIPEONFORK, MADV_DONTDUMP, MADV_HUGEPAGE,
				  MADV_NOHUGEPAGE, MADV_MERGEABLE, MADV_SEQUENTIAL, MADV_RANDOM };
static const char *names[NADV] = { "dc", "wf", "dd", "hg", "nh", "mg", "sr", "rr" };

/*
 * vmflags copies the VmFlags line and the path of the smaps entry that
 * starts at addr; it returns -1 when no entry starts there.
 */
static int vmflags(void *addr, char *flags, size_t fcap, char *path, size_t pcap)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	char line[512];
	int in = 0, found = -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char p[512] = "";
		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %511[^\n]", &s, &e, p) >= 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s == (unsigned long)addr;
			if (in)
				snprintf(path, pcap, "%s", p);
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			snprintf(flags, fcap, "%s", line + 8);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

static int has_flag(const char *flags, const char *name)
{
	char pat[8];
	snprintf(pat, sizeof(pat), " %s", name);
	for (const char *p = flags; (p = strstr(p, pat)); p++)
		if (p[3] == ' ' || p[3] == '\n' || p[3] == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char *m[NADV];
	/*
	 * One reserved area, cut in mappings with a free page between two,
	 * so neighbours never merge and every mapping starts where it did.
	 */
	char *area = mmap(NULL, 2 * NADV * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (area == MAP_FAILED)
		wl_die("mmap area");
	for (int i = 0; i < NADV; i++) {
		m[i] = mmap(area + 2 * i * PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
		if (m[i] == MAP_FAILED)
			wl_die("mmap");
		if (madvise(m[i], PG, advice[i]) < 0)
			wl_die(names[i]);
		memset(m[i], 'a' + i, PG);
	}
	int zfd = open("/dev/zero", O_RDWR | O_CLOEXEC);
	if (zfd < 0)
		wl_die("open /dev/zero");
	char *z = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, zfd, 0);
	if (z == MAP_FAILED)
		wl_die("mmap /dev/zero");
	close(zfd);
	memset(z, 'z', PG);
	char flags[512], path[512];
	for (int i = 0; i < NADV; i++)
		if (vmflags(m[i], flags, sizeof(flags), path, sizeof(path)) < 0 || !has_flag(flags, names[i]))
			wl_die("the kernel does not show a flag set before the dump");
	wl_ready("area %p\n", area);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	for (int i = 0; i < NADV; i++) {
		if (vmflags(m[i], flags, sizeof(flags), path, sizeof(path)) < 0) {
			wl_fail("no mapping starts at %p (madvise %s) any more", m[i], names[i]);
			continue;
		}
		if (!has_flag(flags, names[i]))
			wl_fail("mapping %p lost VmFlags %s (has%s)", m[i], names[i], strtok(flags, "\n"));
		for (int j = 0; j < PG; j++)
			if (m[i][j] != 'a' + i) {
				wl_fail("mapping %p (%s) lost its content", m[i], names[i]);
				break;
			}
	}
	pid_t child = fork();
	if (child < 0)
		wl_die("fork");
	if (child == 0) {
		/* WIPEONFORK: zeroes in the child; DONTFORK: no mapping at all. */
		if (m[1][0] != 0)
			_exit(1);
		if (msync(m[0], PG, MS_ASYNC) == 0 || errno != ENOMEM)
			_exit(2);
		_exit(0);
	}
	int status;
	if (waitpid(child, &status, 0) < 0)
		wl_die("waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) == 1)
		wl_fail("a child forked after restore sees the MADV_WIPEONFORK page's data");
	else if (WEXITSTATUS(status) == 2)
		wl_fail("a child forked after restore has the MADV_DONTFORK mapping");
	if (vmflags(z, flags, sizeof(flags), path, sizeof(path)) < 0)
		wl_fail("no mapping starts at %p (private /dev/zero) any more", z);
	else if (strcmp(path, "/dev/zero") != 0)
		wl_fail("the private /dev/zero mapping at %p maps \"%s\" now", z, path);
	for (int j = 0; j < 2 * PG; j++)
		if (z[j] != (j < PG ? 'z' : 0)) {
			wl_fail("the /dev/zero mapping lost its content at byte %d", j);
			break;
		}
	return wl_finish();
}
