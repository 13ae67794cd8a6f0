/*
 * nsfd: fds on the workload's own namespace files (/proc/self/ns/net,
 * uts, mnt, ipc), as a program keeps one to setns back into later.
 *
 * After restore each fd names the namespace the restored workload is in
 * (same inode as /proc/self/ns/KIND), NS_GET_NSTYPE gives its kind, and
 * setns through it succeeds.
 */
#include "workload.h"

#include <sched.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#ifndef NS_GET_NSTYPE
#define NS_GET_NSTYPE _IO(0xb7, 0x3)
#endif

static const struct {
	const char *name;
	int flag;
} kinds[] = {
	{ "net", CLONE_NEWNET }, { "uts", CLONE_NEWUTS }, { "mnt", CLONE_NEWNS }, { "ipc", CLONE_NEWIPC },
};
#define NKINDS (int)(sizeof(kinds) / sizeof(kinds[0]))

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int fds[NKINDS];
	for (int i = 0; i < NKINDS; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/ns/%s", kinds[i].name);
		fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0)
			wl_die(path);
	}
	wl_ready("fds %d %d %d %d\n", fds[0], fds[1], fds[2], fds[3]);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	for (int i = 0; i < NKINDS; i++) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/ns/%s", kinds[i].name);
		struct stat want, got;
		if (stat(path, &want) < 0 || fstat(fds[i], &got) < 0) {
			wl_fail("%s: stat: %s", kinds[i].name, strerror(errno));
			continue;
		}
		if (want.st_ino != got.st_ino || want.st_dev != got.st_dev)
			wl_fail("the %s namespace fd names inode %lu, the workload is in %lu", kinds[i].name,
				(unsigned long)got.st_ino, (unsigned long)want.st_ino);
		int t = ioctl(fds[i], NS_GET_NSTYPE);
		if (t != kinds[i].flag)
			wl_fail("the %s namespace fd has type %#x, want %#x", kinds[i].name, t, kinds[i].flag);
		if (kinds[i].flag != CLONE_NEWNS && setns(fds[i], kinds[i].flag) < 0)
			wl_fail("setns through the %s namespace fd: %s", kinds[i].name, strerror(errno));
	}
	return wl_finish();
}
