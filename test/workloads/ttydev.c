/*
 * ttydev PATH: a terminal device of the machine held open, /dev/console
 * or a virtual console (/dev/tty1): two fds, one O_NONBLOCK and one not.
 *
 * After restore both fds must be the same device again (major:minor),
 * with their file status flags, and still terminals (tcgetattr). Nothing
 * is written to the device: it is the machine's.
 */
#include "workload.h"

#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <termios.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	if (argc < 3) {
		fprintf(stderr, "usage: ttydev DIR PATH\n");
		return 2;
	}
	const char *path = argv[2];
	int a = open(path, O_RDWR | O_NOCTTY);
	int b = open(path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
	if (a < 0 || b < 0)
		wl_die(path);
	struct stat st;
	if (fstat(a, &st) < 0)
		wl_die("fstat");
	wl_ready("rdev %llu\n", (unsigned long long)st.st_rdev);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct stat sa, sb;
	if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
		wl_fail("fstat: %s", strerror(errno));
	else if (!S_ISCHR(sa.st_mode) || sa.st_rdev != st.st_rdev || !S_ISCHR(sb.st_mode) || sb.st_rdev != st.st_rdev)
		wl_fail("the fds are devices %d:%d and %d:%d, were %s %d:%d", major(sa.st_rdev), minor(sa.st_rdev), major(sb.st_rdev),
			minor(sb.st_rdev), path, major(st.st_rdev), minor(st.st_rdev));
	int fa = fcntl(a, F_GETFL), fb = fcntl(b, F_GETFL);
	if ((fa & (O_ACCMODE | O_NONBLOCK)) != O_RDWR || (fb & (O_ACCMODE | O_NONBLOCK)) != (O_RDONLY | O_NONBLOCK))
		wl_fail("file status flags %#o and %#o, were %#o and %#o", fa, fb, O_RDWR, O_RDONLY | O_NONBLOCK);
	struct termios t;
	if (tcgetattr(a, &t) < 0)
		wl_fail("tcgetattr %s: %s", path, strerror(errno));
	return wl_finish();
}
