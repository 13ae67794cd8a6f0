/*
 * loginuid: the audit login uid of a task that dropped the capability
 * to set it.
 *
 * The workload writes 1234 to /proc/self/loginuid (a task may only set
 * its own), then drops CAP_AUDIT_CONTROL from its bounding, effective
 * and permitted sets: it could not set the login uid again. After
 * restore /proc/self/loginuid must still say 1234, and the capability
 * must still be gone.
 */
#include "workload.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#define LOGINUID 1234

static long read_loginuid(void)
{
	char buf[64] = "";
	int fd = open("/proc/self/loginuid", O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	return strtol(buf, NULL, 10);
}

static int has_audit_control(void)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		wl_die("capget");
	return (d[CAP_AUDIT_CONTROL / 32].effective | d[CAP_AUDIT_CONTROL / 32].permitted) & (1u << (CAP_AUDIT_CONTROL % 32));
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int fd = open("/proc/self/loginuid", O_WRONLY);
	if (fd < 0)
		wl_die("open /proc/self/loginuid");
	char v[16];
	int n = snprintf(v, sizeof(v), "%d", LOGINUID);
	if (write(fd, v, n) != n)
		wl_die("write loginuid");
	close(fd);

	if (prctl(PR_CAPBSET_DROP, CAP_AUDIT_CONTROL, 0, 0, 0) < 0)
		wl_die("PR_CAPBSET_DROP");
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		wl_die("capget");
	for (int i = 0; i < 2; i++) {
		unsigned bit = i == CAP_AUDIT_CONTROL / 32 ? 1u << (CAP_AUDIT_CONTROL % 32) : 0;
		d[i].effective &= ~bit;
		d[i].permitted &= ~bit;
		d[i].inheritable &= ~bit;
	}
	if (syscall(SYS_capset, &h, d) < 0)
		wl_die("capset");
	if (has_audit_control())
		wl_die("CAP_AUDIT_CONTROL is still there");

	wl_ready("loginuid %ld\n", read_loginuid());
	while (!wl_check_requested())
		wl_sleep_ms(10);

	long got = read_loginuid();
	if (got != LOGINUID)
		wl_fail("loginuid is %ld, want %d", got, LOGINUID);
	if (has_audit_control())
		wl_fail("CAP_AUDIT_CONTROL is back");
	return wl_finish();
}
