/*
 * fanotify: a fanotify group (notification class, non-blocking) with an
 * inode mark for FAN_MODIFY and FAN_CLOSE_WRITE on one file, a mount
 * mark for FAN_OPEN on the mount of DIR, and an ignored mask for
 * FAN_OPEN on a second file.
 *
 * After restore a write to the first file is reported (FAN_MODIFY, with
 * an fd on that file, and FAN_CLOSE_WRITE), an open of the second is
 * not (its ignored mask), and an open of a third file on the mount is
 * (the mount mark).
 */
#include "workload.h"

#include <sys/fanotify.h>
#include <sys/stat.h>

/* drain reads every queued event and returns the masks of those whose fd
 * is on the inode ino, ORed. The mount mark reports opens by anything on
 * the mount (other programs under /tmp too), so only the inode the
 * workload acted on tells its own events apart. */
static unsigned long long drain(int fan, ino_t ino)
{
	char buf[8192];
	unsigned long long on = 0;
	for (;;) {
		ssize_t n = read(fan, buf, sizeof(buf));
		if (n <= 0)
			break;
		struct fanotify_event_metadata *m = (struct fanotify_event_metadata *)buf;
		for (; FAN_EVENT_OK(m, n); m = FAN_EVENT_NEXT(m, n)) {
			struct stat st;
			if (m->fd >= 0 && fstat(m->fd, &st) == 0 && st.st_ino == ino)
				on |= m->mask;
			if (m->fd >= 0)
				close(m->fd);
		}
	}
	return on;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	char f1[4096], f2[4096], f3[4096];
	wl_path(f1, sizeof(f1), "modified");
	wl_path(f2, sizeof(f2), "ignored");
	wl_path(f3, sizeof(f3), "opened");
	wl_write_file("modified", "1", 1);
	wl_write_file("ignored", "2", 1);
	wl_write_file("opened", "3", 1);
	int fan = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	if (fan < 0)
		wl_die("fanotify_init");
	if (fanotify_mark(fan, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, f1) < 0 ||
	    fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN, AT_FDCWD, wl_dir) < 0 ||
	    fanotify_mark(fan, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN, AT_FDCWD, f2) < 0)
		wl_die("fanotify_mark");
	struct stat st1, st2, st3;
	if (stat(f1, &st1) < 0 || stat(f2, &st2) < 0 || stat(f3, &st3) < 0)
		wl_die("stat");
	wl_ready("fan %d\n", fan);
	drain(fan, 0); /* opens of the mount since */
	while (!wl_check_requested())
		wl_sleep_ms(10);

	if (!(fcntl(fan, F_GETFL) & O_NONBLOCK))
		wl_fail("the fanotify fd lost O_NONBLOCK");
	drain(fan, 0); /* the mount's opens up to now (check, ready) */
	int fd = open(f2, O_RDONLY);
	if (fd < 0)
		wl_die("open ignored");
	close(fd);
	unsigned long long got = drain(fan, st2.st_ino);
	if (got & FAN_OPEN)
		wl_fail("an open of the file with FAN_OPEN ignored was reported (mask %#llx)", got);
	fd = open(f1, O_WRONLY);
	if (fd < 0 || write(fd, "x", 1) != 1)
		wl_fail("write the marked file: %s", strerror(errno));
	if (fd >= 0)
		close(fd);
	got = drain(fan, st1.st_ino);
	if (!(got & FAN_MODIFY))
		wl_fail("no FAN_MODIFY on the marked file (masks %#llx)", got);
	if (!(got & FAN_CLOSE_WRITE))
		wl_fail("no FAN_CLOSE_WRITE on the marked file (masks %#llx)", got);
	fd = open(f3, O_RDONLY);
	if (fd >= 0)
		close(fd);
	got = drain(fan, st3.st_ino);
	if (!(got & FAN_OPEN))
		wl_fail("no FAN_OPEN from the mount mark (masks %#llx)", got);
	return wl_finish();
}
