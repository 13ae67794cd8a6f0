/*
 * inotifygone: an inotify watch on a file that was removed while the
 * workload keeps it open: the watch has no path to be added by again,
 * only the inode the open fd holds.
 *
 * After restore the watch still reports on that inode: a chmod through
 * the open fd queues IN_ATTRIB on the same watch descriptor.
 */
#include "workload.h"

#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char path[4096];
	wl_path(path, sizeof(path), "watched");
	wl_write_file("watched", "w", 1);
	int in = inotify_init1(IN_NONBLOCK);
	int fd = open(path, O_RDONLY);
	if (in < 0 || fd < 0)
		wl_die("inotify_init1/open");
	int other = inotify_add_watch(in, wl_dir, IN_CREATE);
	int wd = inotify_add_watch(in, path, IN_ATTRIB | IN_DELETE_SELF);
	if (wd < 0 || other < 0)
		wl_die("inotify_add_watch");
	if (unlink(path) < 0)
		wl_die("unlink");
	/* The unlink queued IN_ATTRIB (the link count): read it. */
	char buf[4096];
	while (read(in, buf, sizeof(buf)) > 0)
		;
	wl_ready("wd %d\n", wd);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (fchmod(fd, 0600) < 0)
		wl_fail("fchmod of the removed file: %s", strerror(errno));
	struct pollfd p = { .fd = in, .events = POLLIN };
	if (poll(&p, 1, 2000) != 1) {
		wl_fail("no inotify event after chmod of the removed, watched file");
		return wl_finish();
	}
	ssize_t n = read(in, buf, sizeof(buf));
	int seen = 0;
	for (char *q = buf; n > 0 && q < buf + n;) {
		struct inotify_event *ev = (struct inotify_event *)q;
		if (ev->wd == wd && (ev->mask & IN_ATTRIB))
			seen = 1;
		else if (ev->wd != other) /* files made in DIR (check) */
			wl_fail("unexpected event wd %d mask %#x", ev->wd, ev->mask);
		q += sizeof(*ev) + ev->len;
	}
	if (!seen)
		wl_fail("no IN_ATTRIB on watch %d after chmod of the removed file", wd);
	return wl_finish();
}
