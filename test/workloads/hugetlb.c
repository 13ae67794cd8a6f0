/*
 * hugetlb: hugetlb memory of the default huge page size, one kind per
 * run, chosen by ARGV[2]:
 *   private  a MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB mapping
 *   shared   a MAP_SHARED|MAP_ANONYMOUS|MAP_HUGETLB mapping
 *   memfd    a memfd_create(MFD_HUGETLB) file, written and mapped shared
 *   fork     a private mapping as above, and a child forked after it was
 *            written, which shares its huge pages copy-on-write and
 *            checks its own view after restore
 * Two huge pages; the first is written all over, the second not touched.
 * The test sets vm.nr_hugepages.
 *
 * After restore the mapping is at its address, still hugetlb (smaps
 * "KernelPageSize" is the huge page size) and holds the same data.
 */
#include "workload.h"

#include <sys/mman.h>
#include <sys/wait.h>

static size_t hpsize(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	size_t kb = 0;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Hugepagesize: %zu kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb * 1024;
}

/* kpagesize returns smaps' KernelPageSize in bytes of the mapping at addr. */
static size_t kpagesize(void *addr)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return 0;
	char line[512];
	int in = 0;
	size_t kb = 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = s == (unsigned long)addr;
			continue;
		}
		if (in && sscanf(line, "KernelPageSize: %zu kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb * 1024;
}

static char pattern(size_t i)
{
	return (char)(i * 7 + (i >> 12) * 3 + 1);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	const char *kind = argc > 2 ? argv[2] : "private";
	size_t hp = hpsize();
	if (!hp)
		wl_die("no Hugepagesize in /proc/meminfo");
	char *m;
	int fd = -1;
	int forked = strcmp(kind, "fork") == 0;
	if (strcmp(kind, "private") == 0 || strcmp(kind, "shared") == 0 || forked) {
		int flags = MAP_ANONYMOUS | MAP_HUGETLB | (kind[0] == 's' ? MAP_SHARED : MAP_PRIVATE);
		m = mmap(NULL, 2 * hp, PROT_READ | PROT_WRITE, flags, -1, 0);
	} else if (strcmp(kind, "memfd") == 0) {
		fd = memfd_create("hugetlb", MFD_CLOEXEC | MFD_HUGETLB);
		if (fd < 0)
			wl_die("memfd_create(MFD_HUGETLB)");
		if (ftruncate(fd, 2 * hp) < 0)
			wl_die("ftruncate");
		m = mmap(NULL, 2 * hp, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	} else {
		errno = EINVAL;
		wl_die(kind);
	}
	if (m == MAP_FAILED)
		wl_die("mmap hugetlb (is vm.nr_hugepages set?)");
	for (size_t i = 0; i < hp; i++)
		m[i] = pattern(i);
	pid_t child = -1;
	if (forked) {
		child = fork();
		if (child < 0)
			wl_die("fork");
		if (child == 0) {
			while (!wl_check_requested())
				wl_sleep_ms(10);
			for (size_t i = 0; i < hp; i += 997)
				if (m[i] != pattern(i) || m[hp + i] != 0)
					_exit(1);
			_exit(0);
		}
	}
	wl_ready("addr %p\nfd %d\n", m, fd);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (forked) {
		int status;
		if (waitpid(child, &status, 0) != child)
			wl_die("waitpid");
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			wl_fail("the forked child's copy of the hugetlb mapping differs (status %#x)", status);
	}
	size_t k = kpagesize(m);
	if (k != hp)
		wl_fail("the %s mapping at %p has pages of %zu bytes, want %zu (hugetlb)", kind, m, k, hp);
	for (size_t i = 0; i < hp; i++)
		if (m[i] != pattern(i)) {
			wl_fail("the %s hugetlb mapping differs at byte %zu", kind, i);
			break;
		}
	for (size_t i = hp; i < 2 * hp; i++)
		if (m[i] != 0) {
			wl_fail("the untouched huge page of the %s mapping is not zero at byte %zu", kind, i - hp);
			break;
		}
	if (fd >= 0) {
		char c;
		if (pread(fd, &c, 1, 5) != 1 || c != pattern(5))
			wl_fail("the hugetlb memfd does not hold the mapping's data");
		m[6] = 'Q';
		if (pread(fd, &c, 1, 6) != 1 || c != 'Q')
			wl_fail("the hugetlb memfd and its mapping are no longer shared");
	}
	return wl_finish();
}
