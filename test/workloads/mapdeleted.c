/*
 * mapdeleted: mappings of memfds and of files unlinked after mmap.
 *
 *   memfd "ctcr-map", 4 pages, sealed against shrinking and growing, open
 *             as fd mfd (O_RDWR, offset 123) and mapped three times:
 *     shm     MAP_SHARED rw of pages 0-3, written through the mapping
 *             (page 1) and through the fd (page 2)
 *     shm_ro  MAP_SHARED read-only of pages 2-3 (offset 2 pages)
 *     priv    MAP_PRIVATE rw of pages 0-1, page 0 written (copied on
 *             write, the memfd keeps its own)
 *   memfd "ctcr-maponly", 2 pages, mapped MAP_SHARED twice (at two
 *             addresses), its fd closed: only the mappings hold it
 *   DIR/deleted.dat, 5 pages, mapped MAP_PRIVATE rw at offset 1 page for
 *             3 pages, one page written, then closed and unlinked
 *   DIR/shared.dat, 2 pages, open O_RDWR as fd sfd and mapped MAP_SHARED,
 *             then unlinked
 *
 * After restore: each mapping is at its address with its protection,
 * sharing and offset (/proc/self/maps), holds its content; a write
 * through a shared mapping is read back through the fd and the other
 * mappings, and a write through the fd is seen in the mappings; the
 * memfd keeps its name, seals, size and offset, and its fd and mappings
 * lead to one inode; the unlinked files stay absent from DIR.
 */
#include "workload.h"

#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096

static unsigned char pattern(size_t i, int salt)
{
	return (unsigned char)(i * 7 + salt + i / 509);
}

static void fill(unsigned char *p, size_t n, size_t base, int salt)
{
	for (size_t i = 0; i < n; i++)
		p[i] = pattern(base + i, salt);
}

/* check_bytes reports the first byte of p[0..n) that differs from pattern. */
static void check_bytes(const char *what, const unsigned char *p, size_t n, size_t base, int salt)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] != pattern(base + i, salt)) {
			wl_fail("%s: byte %zu is %#x, want %#x", what, i, p[i], pattern(base + i, salt));
			return;
		}
	}
}

static void xpwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (pwrite(fd, buf, n, off) != (ssize_t)n)
		wl_die("pwrite");
}

static unsigned char *xmmap(size_t len, int prot, int flags, int fd, off_t off)
{
	void *p = mmap(NULL, len, prot, flags, fd, off);
	if (p == MAP_FAILED)
		wl_die("mmap");
	return p;
}

static char dir[4096];
static unsigned char buf[5 * PG];

/* check_maps finds the maps line of the mapping at start and checks it. */
static void check_maps(const char *what, void *start, size_t len, const char *perms, unsigned long off, const char *name)
{
	static char maps[1 << 16];
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		wl_die("maps");
	size_t got = 0;
	ssize_t n;
	while (got + 1 < sizeof(maps) && (n = read(fd, maps + got, sizeof(maps) - 1 - got)) > 0)
		got += n;
	close(fd);
	maps[got] = 0;
	char prefix[64];
	snprintf(prefix, sizeof(prefix), "%lx-%lx ", (unsigned long)start, (unsigned long)start + len);
	for (char *l = maps; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		if (strncmp(l, prefix, strlen(prefix)) != 0)
			continue;
		char *end = strchr(l, '\n');
		if (end)
			*end = 0;
		char p[8] = "", dev[32] = "", path[4096] = "";
		unsigned long o = 0, ino = 0;
		sscanf(l + strlen(prefix), "%7s %lx %31s %lu %4095[^\n]", p, &o, dev, &ino, path);
		char *pp = path;
		while (*pp == ' ')
			pp++;
		if (strcmp(p, perms) != 0 || o != off || !strstr(pp, name))
			wl_fail("%s: maps says \"%s\", want %s offset %lx and %s", what, l, perms, off, name);
		if (end)
			*end = '\n';
		return;
	}
	wl_fail("%s: no mapping %.*s in /proc/self/maps", what, (int)strlen(prefix) - 1, prefix);
}

static ino_t map_ino(void *start, size_t len)
{
	char p[128];
	struct stat st;
	snprintf(p, sizeof(p), "/proc/self/map_files/%lx-%lx", (unsigned long)start, (unsigned long)start + len);
	if (stat(p, &st) < 0) {
		wl_fail("stat %s: %s", p, strerror(errno));
		return 0;
	}
	return st.st_ino;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	snprintf(dir, sizeof(dir), "%s", wl_dir);

	/* memfd ctcr-map */
	int mfd = memfd_create("ctcr-map", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (mfd < 0)
		wl_die("memfd_create");
	fill(buf, 4 * PG, 0, 1);
	xpwrite(mfd, buf, 4 * PG, 0);
	if (fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) < 0)
		wl_die("F_ADD_SEALS");
	unsigned char *shm = xmmap(4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	unsigned char *shm_ro = xmmap(2 * PG, PROT_READ, MAP_SHARED, mfd, 2 * PG);
	unsigned char *priv = xmmap(2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, mfd, 0);
	fill(shm + PG, PG, PG, 2);      /* page 1 through the mapping */
	fill(buf, PG, 2 * PG, 3);       /* page 2 through the fd */
	xpwrite(mfd, buf, PG, 2 * PG);
	fill(priv, PG, 0, 4);           /* page 0 of the private copy */
	check_bytes("memfd page 2 through the mapping before the dump", shm + 2 * PG, PG, 2 * PG, 3);
	check_bytes("memfd page 2 through the read-only mapping before the dump", shm_ro, PG, 2 * PG, 3);
	if (lseek(mfd, 123, SEEK_SET) != 123)
		wl_die("lseek");

	/* memfd ctcr-maponly: mappings only */
	int ofd = memfd_create("ctcr-maponly", MFD_CLOEXEC);
	if (ofd < 0 || ftruncate(ofd, 2 * PG) < 0)
		wl_die("memfd_create maponly");
	unsigned char *only1 = xmmap(2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, ofd, 0);
	unsigned char *only2 = xmmap(2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, ofd, 0);
	close(ofd);
	fill(only1, 2 * PG, 0, 5);

	/* DIR/deleted.dat: private mapping of an unlinked file */
	char dpath[4200];
	snprintf(dpath, sizeof(dpath), "%s/deleted.dat", dir);
	int dfd = open(dpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (dfd < 0)
		wl_die(dpath);
	fill(buf, 5 * PG, 0, 6);
	xpwrite(dfd, buf, 5 * PG, 0);
	unsigned char *del = xmmap(3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, dfd, PG);
	fill(del + PG, PG, 0, 7); /* page 1 of the mapping: file page 2, copied */
	close(dfd);
	if (unlink(dpath) < 0)
		wl_die("unlink deleted.dat");

	/* DIR/shared.dat: shared mapping of an unlinked file, fd kept */
	char spath[4200];
	snprintf(spath, sizeof(spath), "%s/shared.dat", dir);
	int sfd = open(spath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (sfd < 0)
		wl_die(spath);
	fill(buf, 2 * PG, 0, 8);
	xpwrite(sfd, buf, 2 * PG, 0);
	unsigned char *sh = xmmap(2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
	if (unlink(spath) < 0)
		wl_die("unlink shared.dat");

	wl_ready("shm %p\nshm_ro %p\npriv %p\nonly1 %p\nonly2 %p\ndel %p\nsh %p\n",
		 (void *)shm, (void *)shm_ro, (void *)priv, (void *)only1, (void *)only2, (void *)del, (void *)sh);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	/* Addresses, as ready recorded them (read back from disk). */
	if ((unsigned long)shm != wl_saved_num("shm") || (unsigned long)del != wl_saved_num("del") ||
	    (unsigned long)only2 != wl_saved_num("only2") || (unsigned long)sh != wl_saved_num("sh"))
		wl_fail("mapping pointers differ from those saved in ready");
	check_maps("shm", shm, 4 * PG, "rw-s", 0, "/memfd:ctcr-map (deleted)");
	check_maps("shm_ro", shm_ro, 2 * PG, "r--s", 2 * PG, "/memfd:ctcr-map (deleted)");
	check_maps("priv", priv, 2 * PG, "rw-p", 0, "/memfd:ctcr-map (deleted)");
	check_maps("only1", only1, 2 * PG, "rw-s", 0, "/memfd:ctcr-maponly (deleted)");
	check_maps("only2", only2, 2 * PG, "rw-s", 0, "/memfd:ctcr-maponly (deleted)");
	check_maps("del", del, 3 * PG, "rw-p", PG, "/deleted.dat (deleted)");
	check_maps("sh", sh, 2 * PG, "rw-s", 0, "/shared.dat (deleted)");

	/* memfd ctcr-map: content, fd state, one inode. */
	check_bytes("memfd page 0", shm, PG, 0, 1);
	check_bytes("memfd page 1 (written through the mapping)", shm + PG, PG, PG, 2);
	check_bytes("memfd page 2 (written through the fd)", shm + 2 * PG, PG, 2 * PG, 3);
	check_bytes("memfd page 3", shm + 3 * PG, PG, 3 * PG, 1);
	check_bytes("read-only mapping at offset 2 pages", shm_ro, PG, 2 * PG, 3);
	check_bytes("private mapping, copied page 0", priv, PG, 0, 4);
	check_bytes("private mapping, page 1 from the memfd", priv + PG, PG, PG, 2);
	struct stat st;
	if (fstat(mfd, &st) < 0)
		wl_die("fstat memfd");
	if (st.st_size != 4 * PG)
		wl_fail("memfd size %lld, want %d", (long long)st.st_size, 4 * PG);
	if (map_ino(shm, 4 * PG) != st.st_ino || map_ino(shm_ro, 2 * PG) != st.st_ino || map_ino(priv, 2 * PG) != st.st_ino)
		wl_fail("the memfd's fd and its mappings lead to different inodes");
	int seals = fcntl(mfd, F_GET_SEALS);
	if (seals != (F_SEAL_SHRINK | F_SEAL_GROW))
		wl_fail("memfd seals %#x, want %#x", seals, F_SEAL_SHRINK | F_SEAL_GROW);
	if (lseek(mfd, 0, SEEK_CUR) != 123)
		wl_fail("memfd offset %lld, want 123", (long long)lseek(mfd, 0, SEEK_CUR));
	char link[256];
	char fdp[64];
	snprintf(fdp, sizeof(fdp), "/proc/self/fd/%d", mfd);
	ssize_t ln = readlink(fdp, link, sizeof(link) - 1);
	link[ln > 0 ? ln : 0] = 0;
	if (strcmp(link, "/memfd:ctcr-map (deleted)") != 0)
		wl_fail("memfd fd leads to %s", link);

	/* Sharing: a write through the mapping is seen through the fd and
	 * the read-only mapping; a write through the fd in the mapping. */
	shm[3 * PG + 5] = 0xa5;
	unsigned char b = 0;
	if (pread(mfd, &b, 1, 3 * PG + 5) != 1 || b != 0xa5)
		wl_fail("a write through the shared memfd mapping is not seen through the fd (read %#x)", b);
	if (shm_ro[PG + 5] != 0xa5)
		wl_fail("a write through the shared memfd mapping is not seen through the read-only mapping");
	b = 0x5a;
	xpwrite(mfd, &b, 1, 7);
	if (shm[7] != 0x5a)
		wl_fail("a write through the memfd's fd is not seen in its shared mapping");
	if (priv[7] != pattern(7, 4))
		wl_fail("a write through the memfd's fd changed the copied page of the private mapping");

	/* ctcr-maponly: content, the two mappings still one object. */
	check_bytes("mapping-only memfd", only2, 2 * PG, 0, 5);
	only1[100] ^= 0xff;
	if (only2[100] != (unsigned char)(pattern(100, 5) ^ 0xff))
		wl_fail("the two mappings of the mapping-only memfd are no longer shared");
	if (map_ino(only1, 2 * PG) != map_ino(only2, 2 * PG))
		wl_fail("the two mappings of the mapping-only memfd lead to different inodes");

	/* DIR/deleted.dat: file pages 1 and 3 as written, page 2 the copy. */
	check_bytes("unlinked file mapping, page 0 (file page 1)", del, PG, PG, 6);
	check_bytes("unlinked file mapping, page 1 (copied)", del + PG, PG, 0, 7);
	check_bytes("unlinked file mapping, page 2 (file page 3)", del + 2 * PG, PG, 3 * PG, 6);

	/* DIR/shared.dat: content and sharing with its fd. */
	check_bytes("shared mapping of an unlinked file", sh, 2 * PG, 0, 8);
	sh[PG + 9] = 0x3c;
	if (pread(sfd, &b, 1, PG + 9) != 1 || b != 0x3c)
		wl_fail("a write through the shared mapping of the unlinked file is not seen through its fd (read %#x)", b);
	if (fstat(sfd, &st) < 0 || st.st_nlink != 0 || map_ino(sh, 2 * PG) != st.st_ino)
		wl_fail("shared.dat: its fd (%lu links) and mapping are not one unlinked inode", (unsigned long)st.st_nlink);

	if (access(dpath, F_OK) == 0 || access(spath, F_OK) == 0)
		wl_fail("an unlinked file is back in %s", dir);
	return wl_finish();
}
