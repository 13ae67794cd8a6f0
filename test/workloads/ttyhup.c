/*
 * ttyhup: a pty slave whose master was closed. The kernel hung the slave
 * up and removed its /dev/pts node; the fd stays.
 *
 * After restore the fd must still be a hung-up pty slave: a pts device,
 * its node gone (the fd's link ends in " (deleted)"), read returning end
 * of file, write and tcgetattr failing with EIO.
 */
#include "workload.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int m = posix_openpt(O_RDWR | O_NOCTTY);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0)
		wl_die("posix_openpt");
	char name[64];
	if (ptsname_r(m, name, sizeof(name)))
		wl_die("ptsname");
	int s = open(name, O_RDWR | O_NOCTTY);
	if (s < 0)
		wl_die(name);
	close(m);
	wl_ready("name %s\n", name);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct stat st;
	if (fstat(s, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) < 136 || major(st.st_rdev) > 143)
		wl_fail("the fd is no pty slave (%d:%d)", major(st.st_rdev), minor(st.st_rdev));
	char link[256], self[64];
	snprintf(self, sizeof(self), "/proc/self/fd/%d", s);
	ssize_t n = readlink(self, link, sizeof(link) - 1);
	link[n > 0 ? n : 0] = 0;
	if (n < 10 || strcmp(link + n - 10, " (deleted)") != 0)
		wl_fail("the slave's node is there (%s): the slave is not hung up", link);
	char buf[8];
	n = read(s, buf, sizeof(buf));
	if (n != 0)
		wl_fail("read on the hung-up slave: %zd (%s), want end of file", n, n < 0 ? strerror(errno) : "data");
	n = write(s, "x", 1);
	if (n != -1 || errno != EIO)
		wl_fail("write on the hung-up slave: %zd (%s), want EIO", n, n < 0 ? strerror(errno) : "written");
	struct termios t;
	if (tcgetattr(s, &t) == 0 || errno != EIO)
		wl_fail("tcgetattr on the hung-up slave: %s, want EIO", strerror(errno));
	return wl_finish();
}
