/*
 * memprot: mappings whose protection forbids reading, each with data
 * written before its protection was dropped: PROT_NONE, PROT_WRITE only
 * (which x86 maps readable anyway, but maps shows "-w-"), PROT_EXEC only,
 * and a PROT_NONE guard page inside a readable mapping.
 *
 * After restore each mapping has its old protection (as /proc/self/maps
 * prints it) and, once made readable again, its old content.
 */
#include "workload.h"

#include <sys/mman.h>

#define PG 4096
#define NMAP 4

static void fill(char *p, size_t n, int seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (char)(seed * 13 + i * 5 + (i >> 12));
}

static int same(const char *p, size_t n, int seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (char)(seed * 13 + i * 5 + (i >> 12)))
			return 0;
	return 1;
}

/* perms returns the "rwxp" field of the maps line that contains addr. */
static int perms(void *addr, char out[5])
{
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		return -1;
	char line[512];
	int found = -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		char p[5];
		if (sscanf(line, "%lx-%lx %4s", &s, &e, p) == 3 && (unsigned long)addr >= s && (unsigned long)addr < e) {
			memcpy(out, p, 5);
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	static const int prots[NMAP] = { PROT_NONE, PROT_WRITE, PROT_EXEC, PROT_NONE };
	static const char *want[NMAP] = { "---p", "-w-p", "--xp", "---p" };
	static const size_t npages[NMAP] = { 3, 2, 2, 1 };
	char *m[NMAP];
	/* The last one is a guard page between two readable pages. */
	char *guarded = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guarded == MAP_FAILED)
		wl_die("mmap guarded");
	for (int i = 0; i < NMAP; i++) {
		size_t sz = npages[i] * PG;
		m[i] = i == 3 ? guarded + PG : mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m[i] == MAP_FAILED)
			wl_die("mmap");
		fill(m[i], sz, i + 1);
	}
	fill(guarded, PG, 10);
	fill(guarded + 2 * PG, PG, 11);
	for (int i = 0; i < NMAP; i++)
		if (mprotect(m[i], npages[i] * PG, prots[i]) < 0)
			wl_die("mprotect");
	wl_ready("maps %p %p %p %p\n", m[0], m[1], m[2], m[3]);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	for (int i = 0; i < NMAP; i++) {
		char p[5];
		if (perms(m[i], p) < 0)
			wl_fail("mapping %d at %p is gone", i, m[i]);
		else if (strcmp(p, want[i]) != 0)
			wl_fail("mapping %d at %p has protection %s, want %s", i, m[i], p, want[i]);
		if (mprotect(m[i], npages[i] * PG, PROT_READ) < 0)
			wl_fail("mprotect(PROT_READ) of mapping %d: %s", i, strerror(errno));
		else if (!same(m[i], npages[i] * PG, i + 1))
			wl_fail("mapping %d (protection %s) lost its content", i, want[i]);
	}
	if (!same(guarded, PG, 10) || !same(guarded + 2 * PG, PG, 11))
		wl_fail("the pages around the guard page lost their content");
	return wl_finish();
}
