/*
 * ttyowner: the owner of /dev/pts nodes a program chowned (as grantpt
 * does, or a login program for its user).
 *
 *   pair A: both ends held, the slave node chowned to 1234:5678
 *   pair B: only the master held, its slave node chowned to 4321:8765
 *
 * After restore each pty's /dev/pts node must have its owner again, and
 * pair A's slave fd must still be that node.
 */
#include "workload.h"

#include <sys/stat.h>

static int pair(char *name, size_t cap)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		wl_die("posix_openpt");
	if (ptsname_r(m, name, cap))
		wl_die("ptsname");
	return m;
}

static void check_owner(int m, uid_t uid, gid_t gid, const char *which)
{
	char name[64];
	struct stat st;
	if (ptsname_r(m, name, sizeof(name)) || stat(name, &st) < 0) {
		wl_fail("%s: its slave node: %s", which, strerror(errno));
		return;
	}
	if (st.st_uid != uid || st.st_gid != gid)
		wl_fail("%s: %s is owned by %d:%d, was %d:%d", which, name, (int)st.st_uid, (int)st.st_gid, (int)uid, (int)gid);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char na[64], nb[64];
	int ma = pair(na, sizeof(na));
	int sa = open(na, O_RDWR | O_NOCTTY);
	if (sa < 0)
		wl_die(na);
	if (chown(na, 1234, 5678) < 0)
		wl_die("chown A");
	int mb = pair(nb, sizeof(nb));
	if (chown(nb, 4321, 8765) < 0)
		wl_die("chown B");
	wl_ready("a %s\nb %s\n", na, nb);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	check_owner(ma, 1234, 5678, "pair A");
	check_owner(mb, 4321, 8765, "pair B");
	struct stat ss;
	if (fstat(sa, &ss) < 0 || ss.st_uid != 1234 || ss.st_gid != 5678)
		wl_fail("pair A's slave fd is owned by %d:%d, want 1234:5678", (int)ss.st_uid, (int)ss.st_gid);
	return wl_finish();
}
