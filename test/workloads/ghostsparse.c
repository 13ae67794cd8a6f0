/*
 * ghostsparse: big and sparse unlinked files (ghosts).
 *
 *   ghostsparse DIR [dense]
 *
 *   DIR/sparse.dat  100 MiB apparent size, data only in four islands
 *                   (at 0, 10 MiB + 4 KiB, 50 MiB and the last 8 KiB)
 *                   plus 100 bytes at 30 MiB + 123; open O_RDWR as fd sfd
 *                   at offset 12345, then unlinked
 *   DIR/dense.dat   with "dense": 70 MiB of data, every byte written;
 *                   open O_RDONLY as fd dfd, then unlinked
 *
 * After restore: both fds are unlinked files of the same size and offset;
 * the islands hold their bytes; SEEK_DATA/SEEK_HOLE find the same islands
 * (the holes are still holes) and st_blocks stays far below the size; the
 * dense file holds every byte of its pattern. A dump that kept the sparse
 * file densely would restore it with 100 MiB of blocks.
 */
#include "workload.h"

#include <sys/stat.h>

#define KiB 1024L
#define MiB (1024L * KiB)
#define SPARSE_SIZE (100 * MiB)
#define DENSE_SIZE (70 * MiB)

static const struct {
	off_t off;
	size_t len;
} islands[] = {
	{ 0, 16 * KiB },
	{ 10 * MiB + 4 * KiB, 8 * KiB },
	{ 50 * MiB, 64 * KiB },
	{ SPARSE_SIZE - 8 * KiB, 8 * KiB },
};
#define NISLANDS (sizeof(islands) / sizeof(islands[0]))
/* An island smaller than a block, away from the others. */
#define SMALL_OFF (30 * MiB + 123)
#define SMALL_LEN 100

static unsigned char pattern(off_t i, int salt)
{
	return (unsigned char)(i * 13 + salt + i / 4093);
}

static unsigned char buf[1 << 20];

static void fill(off_t base, size_t n, int salt)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = pattern(base + (off_t)i, salt);
}

static void xpwrite(int fd, size_t n, off_t off)
{
	if (pwrite(fd, buf, n, off) != (ssize_t)n)
		wl_die("pwrite");
}

/* check_range reads [off, off+n) of fd and compares it with the pattern. */
static void check_range(const char *what, int fd, off_t off, size_t n, int salt)
{
	while (n > 0) {
		size_t step = n < sizeof(buf) ? n : sizeof(buf);
		ssize_t got = pread(fd, buf, step, off);
		if (got != (ssize_t)step) {
			wl_fail("%s: read %zu bytes at %lld: got %zd (%s)", what, step, (long long)off, got, strerror(errno));
			return;
		}
		for (size_t i = 0; i < step; i++) {
			if (buf[i] != pattern(off + (off_t)i, salt)) {
				wl_fail("%s: byte at %lld is %#x, want %#x", what, (long long)(off + (off_t)i), buf[i],
					pattern(off + (off_t)i, salt));
				return;
			}
		}
		off += step;
		n -= step;
	}
}

static int create(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	if (fd < 0)
		wl_die(path);
	return fd;
}

int main(int argc, char **argv)
{
	wl_init(argc, argv);
	int dense = argc > 2 && strcmp(argv[2], "dense") == 0;
	char spath[4200], dpath[4200];
	snprintf(spath, sizeof(spath), "%s/sparse.dat", wl_dir);
	snprintf(dpath, sizeof(dpath), "%s/dense.dat", wl_dir);

	int sfd = create(spath);
	if (ftruncate(sfd, SPARSE_SIZE) < 0)
		wl_die("ftruncate sparse.dat");
	for (size_t k = 0; k < NISLANDS; k++) {
		fill(islands[k].off, islands[k].len, 1);
		xpwrite(sfd, islands[k].len, islands[k].off);
	}
	fill(SMALL_OFF, SMALL_LEN, 1);
	xpwrite(sfd, SMALL_LEN, SMALL_OFF);
	if (lseek(sfd, 12345, SEEK_SET) != 12345)
		wl_die("lseek sparse.dat");
	if (unlink(spath) < 0)
		wl_die("unlink sparse.dat");
	struct stat st0;
	if (fstat(sfd, &st0) < 0)
		wl_die("fstat sparse.dat");

	int dfd = -1;
	if (dense) {
		int w = create(dpath);
		for (off_t off = 0; off < DENSE_SIZE; off += sizeof(buf)) {
			fill(off, sizeof(buf), 2);
			xpwrite(w, sizeof(buf), off);
		}
		dfd = open(dpath, O_RDONLY | O_CLOEXEC);
		if (dfd < 0)
			wl_die("open dense.dat");
		close(w);
		if (lseek(dfd, 777, SEEK_SET) != 777)
			wl_die("lseek dense.dat");
		if (unlink(dpath) < 0)
			wl_die("unlink dense.dat");
	}

	wl_ready("sfd %d\ndfd %d\nblocks %lld\n", sfd, dfd, (long long)st0.st_blocks);
	while (!wl_check_requested())
		wl_sleep_ms(10);

	struct stat st;
	if (fstat(sfd, &st) < 0)
		wl_die("fstat sparse.dat after");
	if (st.st_size != SPARSE_SIZE || st.st_nlink != 0 || (st.st_mode & 07777) != 0640)
		wl_fail("sparse.dat: size %lld, %lu links, mode %#o; want %ld, 0 links, 0640", (long long)st.st_size,
			(unsigned long)st.st_nlink, st.st_mode & 07777, SPARSE_SIZE);
	/* The islands are about 100 KiB: allow a few blocks of slack each,
	 * far below the 100 MiB a dense copy takes. */
	if (st.st_blocks * 512 > 2 * MiB)
		wl_fail("sparse.dat: %lld blocks of 512 bytes (%lld before the dump): its holes were filled",
			(long long)st.st_blocks, (long long)wl_saved_num("blocks"));
	if (lseek(sfd, 0, SEEK_CUR) != 12345)
		wl_fail("sparse.dat: offset %lld, want 12345", (long long)lseek(sfd, 0, SEEK_CUR));
	for (size_t k = 0; k < NISLANDS; k++) {
		char what[64];
		snprintf(what, sizeof(what), "sparse.dat island %zu", k);
		check_range(what, sfd, islands[k].off, islands[k].len, 1);
		/* The island is data from its start to its end, then a hole
		 * (or the end of the file). */
		off_t d = lseek(sfd, k == 0 ? 0 : islands[k - 1].off + (off_t)islands[k - 1].len, SEEK_DATA);
		off_t want = islands[k].off;
		if (k == 2)
			want = SMALL_OFF & ~4095L; /* the small island comes first */
		if (d != want)
			wl_fail("%s: SEEK_DATA found data at %lld, want %lld", what, (long long)d, (long long)want);
		off_t h = lseek(sfd, islands[k].off, SEEK_HOLE);
		if (h != islands[k].off + (off_t)islands[k].len)
			wl_fail("%s: SEEK_HOLE found the hole after it at %lld, want %lld", what, (long long)h,
				(long long)(islands[k].off + (off_t)islands[k].len));
	}
	check_range("sparse.dat small island", sfd, SMALL_OFF, SMALL_LEN, 1);
	if (lseek(sfd, SMALL_OFF, SEEK_HOLE) != ((SMALL_OFF + SMALL_LEN + 4095) & ~4095L))
		wl_fail("sparse.dat: SEEK_HOLE after the small island at %lld", (long long)lseek(sfd, SMALL_OFF, SEEK_HOLE));
	/* A hole reads as zeros. */
	unsigned char z[64];
	if (pread(sfd, z, sizeof(z), 70 * MiB) != (ssize_t)sizeof(z))
		wl_fail("sparse.dat: read in a hole");
	for (size_t i = 0; i < sizeof(z); i++)
		if (z[i]) {
			wl_fail("sparse.dat: byte %zu of the hole at 70 MiB is %#x", i, z[i]);
			break;
		}

	if (dense) {
		if (fstat(dfd, &st) < 0)
			wl_die("fstat dense.dat after");
		if (st.st_size != DENSE_SIZE || st.st_nlink != 0)
			wl_fail("dense.dat: size %lld, %lu links; want %ld, 0 links", (long long)st.st_size,
				(unsigned long)st.st_nlink, DENSE_SIZE);
		if (lseek(dfd, 0, SEEK_CUR) != 777)
			wl_fail("dense.dat: offset %lld, want 777", (long long)lseek(dfd, 0, SEEK_CUR));
		if ((fcntl(dfd, F_GETFL) & O_ACCMODE) != O_RDONLY)
			wl_fail("dense.dat: fd is no longer read-only");
		check_range("dense.dat", dfd, 0, DENSE_SIZE, 2);
	}
	if (access(spath, F_OK) == 0 || access(dpath, F_OK) == 0)
		wl_fail("an unlinked file is back in DIR after restore");
	return wl_finish();
}
