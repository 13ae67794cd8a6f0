/*
 * sharefiles: a child cloned with CLONE_FILES | CLONE_FS shares its
 * parent's fd table, cwd and umask. After restore a file the child opens
 * must appear in the parent's table, and a chdir or umask of the child
 * must be the parent's too.
 */
#include "workload.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

struct shared {
	volatile int cmd;  /* 1: open a file; 2: chdir and umask */
	volatile int fd;   /* what the child opened */
	volatile int done; /* the child did cmd */
};

static struct shared *sh;
static char path[4096], dir2[4096];
static char stack[64 * 1024];

static int child(void *arg)
{
	(void)arg;
	for (;;) {
		if (sh->cmd == 1 && !sh->done) {
			sh->fd = open(path, O_RDONLY);
			sh->done = 1;
		}
		if (sh->cmd == 2 && !sh->done) {
			if (chdir(dir2) == 0)
				umask(0027);
			sh->done = 1;
		}
		wl_sleep_ms(5);
	}
	return 0;
}

static void ask(int cmd)
{
	sh->done = 0;
	sh->cmd = cmd;
	for (int i = 0; i < 1000 && !sh->done; i++)
		wl_sleep_ms(5);
	if (!sh->done)
		wl_fail("the child did not answer command %d", cmd);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	wl_path(path, sizeof(path), "opened-by-child");
	wl_write_file("opened-by-child", "x", 1);
	wl_path(dir2, sizeof(dir2), "");
	umask(0022);
	pid_t pid = clone(child, stack + sizeof(stack), CLONE_FILES | CLONE_FS | SIGCHLD, NULL);
	if (pid < 0)
		wl_die("clone");
	wl_ready("child=%d\n", pid);
	while (!wl_check_requested())
		wl_sleep_ms(10);
	ask(1);
	struct stat a, b;
	if (sh->fd < 0 || fstat(sh->fd, &a) < 0 || stat(path, &b) < 0 || a.st_ino != b.st_ino)
		wl_fail("the fd %d the child opened is not in the parent's table (fd tables no longer shared)", sh->fd);
	ask(2);
	char cwd[4096];
	if (!getcwd(cwd, sizeof(cwd)) || strncmp(cwd, dir2, strlen(cwd)))
		wl_fail("the parent's cwd is %s after the child's chdir to %s (fs no longer shared)", cwd, dir2);
	mode_t m = umask(0022);
	if (m != 0027)
		wl_fail("the parent's umask is %o after the child set 027", m);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	return wl_finish();
}
