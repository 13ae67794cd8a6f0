/*
 * fdtchain: one fd table shared by three generations. The workload
 * clones a child with CLONE_FILES, and that child clones a grandchild
 * with CLONE_FILES: all three use the same table (CRIU's fdt_shared).
 *
 * After restore a file the grandchild opens appears in the workload's
 * table, and an fd the middle child closes is closed for the workload.
 */
#include "workload.h"

#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

struct shared {
	volatile int cmd;  /* 1: grandchild opens path; 2: child closes fd */
	volatile int arg;  /* the fd to close */
	volatile int fd;   /* what the grandchild opened */
	volatile int done; /* the command was done */
	volatile int gpid; /* the grandchild */
};

static struct shared *sh;
static char path[4096];
static char stack1[64 * 1024], stack2[64 * 1024];

static int grandchild(void *arg)
{
	(void)arg;
	for (;;) {
		if (sh->cmd == 1 && !sh->done) {
			sh->fd = open(path, O_RDONLY);
			sh->done = 1;
		}
		wl_sleep_ms(5);
	}
	return 0;
}

static int child(void *arg)
{
	(void)arg;
	int g = clone(grandchild, stack2 + sizeof(stack2), CLONE_FILES | SIGCHLD, NULL);
	if (g < 0)
		wl_die("clone grandchild");
	sh->gpid = g;
	for (;;) {
		if (sh->cmd == 2 && !sh->done) {
			close(sh->arg);
			sh->done = 1;
		}
		wl_sleep_ms(5);
	}
	return 0;
}

static void ask(int cmd, int arg)
{
	sh->done = 0;
	sh->arg = arg;
	sh->cmd = cmd;
	for (int i = 0; i < 1000 && !sh->done; i++)
		wl_sleep_ms(5);
	if (!sh->done)
		wl_fail("command %d was not answered", cmd);
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		wl_die("mmap");
	wl_path(path, sizeof(path), "opened-by-grandchild");
	wl_write_file("opened-by-grandchild", "g", 1);
	int c = clone(child, stack1 + sizeof(stack1), CLONE_FILES | SIGCHLD, NULL);
	if (c < 0)
		wl_die("clone child");
	for (int i = 0; i < 1000 && !sh->gpid; i++)
		wl_sleep_ms(5);
	if (!sh->gpid) {
		errno = ETIMEDOUT;
		wl_die("the grandchild did not start");
	}
	int mine = open("/dev/null", O_RDONLY);
	if (mine < 0)
		wl_die("/dev/null");
	wl_ready("child %d\ngrandchild %d\nmine %d\n", c, sh->gpid, mine);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	ask(1, 0);
	char b;
	if (sh->fd < 0)
		wl_fail("the grandchild could not open a file: %s", strerror(errno));
	else if (pread(sh->fd, &b, 1, 0) != 1 || b != 'g')
		wl_fail("fd %d the grandchild opened is not in the workload's table: %s", sh->fd, strerror(errno));
	ask(2, mine);
	if (fcntl(mine, F_GETFD) >= 0 || errno != EBADF)
		wl_fail("fd %d the child closed is still open in the workload's table", mine);
	kill(sh->gpid, SIGKILL);
	kill(c, SIGKILL);
	waitpid(c, NULL, 0);
	return wl_finish();
}
