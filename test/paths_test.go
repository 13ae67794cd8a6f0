package test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Paths are hostile: a checkpointed container (or any dumped tree) may
// plant symlinks along the paths restore reopens, a bundle may carry a
// crafted tmpfs archive, and anybody who can write where ctcr writes
// its own files may plant links at the names it uses. These tests plant
// them for real and watch the host directories the links lead to with
// inotify: nothing there may be opened, created or changed.

// hostWatch reports every inotify event in a host directory (and on the
// entries in it) from its creation on.
type hostWatch struct {
	t   *testing.T
	dir string
	fd  int
}

func watchHostDir(t *testing.T, dir string) *hostWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	mask := uint32(unix.IN_OPEN | unix.IN_ACCESS | unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO)
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	w := &hostWatch{t: t, dir: dir, fd: fd}
	t.Cleanup(func() { unix.Close(fd) })
	return w
}

// events drains what happened in the directory since the last call.
func (w *hostWatch) events() []string {
	var out []string
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Read(w.fd, buf)
		if n <= 0 || err != nil {
			return out
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			mask := binary.NativeEndian.Uint32(buf[off+4:])
			nameLen := int(binary.NativeEndian.Uint32(buf[off+12:]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+nameLen]), "\x00")
			if name == "" {
				name = "."
			}
			out = append(out, fmt.Sprintf("%s %#x", name, mask))
			off += unix.SizeofInotifyEvent + nameLen
		}
	}
}

// assertUntouched fails the test if anything in the directory was
// opened, read, created, changed or removed; what names the step.
func (w *hostWatch) assertUntouched(what string) {
	w.t.Helper()
	if ev := w.events(); len(ev) > 0 {
		w.t.Errorf("%s: the host directory %s was touched (inotify: %s)", what, w.dir, strings.Join(ev, ", "))
	}
}

// hostSecretDir makes a host directory of root's, mode 0700, holding a
// root-only file "secret", a FIFO "fifo" the test holds open (the
// returned file) and nothing else: what a planted link leads to.
func hostSecretDir(t *testing.T) (string, *os.File) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "host")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte("HOST-SECRET\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "fifo"), os.O_RDWR|unix.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return dir, f
}

// assertFifoEmpty fails if anything was written into the host's FIFO.
func assertFifoEmpty(t *testing.T, f *os.File, what string) {
	t.Helper()
	if n, err := unix.IoctlGetInt(int(f.Fd()), unix.TIOCINQ); err != nil || n != 0 {
		t.Errorf("%s: the host FIFO %s holds %d bytes (%v): restore wrote the checkpoint's data into it", what, f.Name(), n, err)
	}
}

// plant is a change made to a file system after the checkpoint, and
// its undoing.
type plant struct {
	name string // a sentence: what was planted
	path string // the path of the image it leads astray, in the message
	do   func(t *testing.T)
	undo func(t *testing.T)
}

// symlinkInstead moves path aside and puts a symlink to target there.
func symlinkInstead(path, target string) (func(t *testing.T), func(t *testing.T)) {
	return func(t *testing.T) {
			t.Helper()
			if err := os.Rename(path, path+".orig"); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, func(t *testing.T) {
			t.Helper()
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".orig", path); err != nil {
				t.Fatal(err)
			}
		}
}

// stopRestored kills a container a restore that should have failed
// brought back, and reaps its init (a child of this subreaper), so that
// the next case can restore the checkpoint again.
func stopRestored(t *testing.T, c *runcContainer) {
	t.Helper()
	st, err := c.state()
	if err != nil || st.Pid <= 0 {
		t.Fatalf("the restored container %s: no init in the runtime's state (%v)", c.id, err)
	}
	// Its PID namespace ends with its init.
	unix.Kill(st.Pid, unix.SIGKILL)
	if _, _, err := reap(st.Pid, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c.waitStatus(t, "stopped", 10*time.Second)
}

// climbTo is a relative symlink target that climbs far above any root
// and then descends to the absolute path p.
func climbTo(p string) string { return strings.Repeat("../", 24) + strings.TrimPrefix(p, "/") }

// TestContainerPlantedSymlinks: a runc container's process holds a file,
// a FIFO and a listening unix socket on its root file system. After the
// checkpoint, symlinks are planted along each path (and in place of the
// mount point of its tmpfs) (an absolute one to a
// host directory holding a root-only secret, a relative one climbing out
// of the root) and restore is tried: it must fail with exit status 17
// and a message naming the path, give no task anything of the host, and
// leave the host directory untouched. With the links removed, the same
// checkpoint restores and the workload finds its own file, FIFO and
// socket.
func TestContainerPlantedSymlinks(t *testing.T) {
	c := workloadContainer(t, "plinks", "paths", "sock", "/dd/secret", "/df/fifo", "/ds/sock")
	host, hostFifo := hostSecretDir(t)
	dir := filepath.Join(t.TempDir(), "ckpt")
	checkpointContainer(t, c, dir)

	rootfs := c.rootfs
	var plants []plant
	add := func(name, path, at, target string) {
		do, undo := symlinkInstead(filepath.Join(rootfs, at), target)
		plants = append(plants, plant{name: name, path: path, do: do, undo: undo})
	}
	add("an absolute symlink to a host directory replaces the file's directory", "/dd/secret", "dd", host)
	add("a relative symlink climbing out of the root replaces the file's directory", "/dd/secret", "dd", climbTo(host))
	add("an absolute symlink to the host's secret replaces the file", "/dd/secret", "dd/secret", filepath.Join(host, "secret"))
	add("a relative symlink climbing out of the root replaces the file", "/dd/secret", "dd/secret", climbTo(filepath.Join(host, "secret")))
	add("an absolute symlink to a host directory replaces the FIFO's directory", "/df/fifo", "df", host)
	add("a relative symlink climbing out of the root replaces the FIFO", "/df/fifo", "df/fifo", climbTo(filepath.Join(host, "fifo")))
	add("an absolute symlink to a host directory replaces the socket's directory", "/ds/sock", "ds", host)
	add("a relative symlink climbing out of the root replaces the socket's directory", "/ds/sock", "ds", climbTo(host))
	add("an absolute symlink to a host directory replaces the tmpfs mount point", "/data", "data", host)

	watch := watchHostDir(t, host)
	for _, p := range plants {
		t.Run(p.name, func(t *testing.T) {
			p.do(t)
			defer p.undo(t)
			r := runCtcr(t, 60*time.Second, "restore", c.id, "-D", dir)
			switch {
			case r.code() == 0:
				// A confined restore would do too, but then the task
				// must have its own objects: ask it, then stop the
				// container for the next case.
				c.notePid()
				c.exec("touch /data/wl/check")
				res := ""
				for i := 0; i < 50 && !strings.HasPrefix(res, "PASS") && !strings.HasPrefix(res, "FAIL"); i++ {
					time.Sleep(100 * time.Millisecond)
					res, _ = c.exec("cat /data/wl/result")
				}
				t.Errorf("%s: the workload says: %s", p.name, strings.TrimSpace(res))
				stopRestored(t, c)
				t.Errorf("%s: restore succeeded; the container was restored through a planted link", p.name)
			case r.code() != 17:
				t.Errorf("%s: exit status %d, want 17; stderr: %s", r, r.code(), r.stderr())
			case !strings.Contains(r.stderr(), p.path):
				t.Errorf("%s: the message does not name %s: %s", r, p.path, r.stderr())
			}
			if lines := strings.Count(strings.TrimSpace(r.stderr()), "\n") + 1; lines != 1 {
				t.Errorf("%s: %d lines on stderr, want one: %s", r, lines, r.stderr())
			}
			t.Logf("%s: %s", p.name, strings.TrimSpace(r.stderr()))
			watch.assertUntouched(p.name)
			assertFifoEmpty(t, hostFifo, p.name)
			if st := c.status(); st == "running" {
				t.Errorf("%s: after a failed restore runc says the container is %s", p.name, st)
			}
		})
	}
	if t.Failed() {
		return
	}
	restoreContainer(t, c, dir)
	c.checkWorkload(t, "restored once the planted links were gone")
	watch.assertUntouched("the restore without links")
}

// TestDumpRestorePlantedSymlinks: the same for a plain dump and restore
// of a process: after the dump, the directories of its file and FIFO
// become symlinks to a host directory holding a decoy of each. A
// process's paths are those the kernel showed at the dump, which hold
// no symlink, so restore refuses (exit 1, the path named) instead of
// giving the task the decoys or writing the FIFO's data into the host's;
// with the links removed the dump restores.
func TestDumpRestorePlantedSymlinks(t *testing.T) {
	needCtcr(t)
	base := t.TempDir()
	w := startWorkload(t, "paths", base+"/fdir/file", base+"/pdir/fifo", base+"/sdir/sock")
	img := filepath.Join(t.TempDir(), "img")
	dump(t, w, img, false, 0)
	host, hostFifo := hostSecretDir(t)
	if err := os.Rename(filepath.Join(host, "secret"), filepath.Join(host, "file")); err != nil {
		t.Fatal(err)
	}
	watch := watchHostDir(t, host)
	for _, p := range []struct{ name, dir, path string }{
		{"the file's directory is a symlink to a host directory", "fdir", base + "/fdir/file"},
		{"the FIFO's directory is a symlink to a host directory", "pdir", base + "/pdir/fifo"},
	} {
		t.Run(p.name, func(t *testing.T) {
			do, undo := symlinkInstead(filepath.Join(base, p.dir), host)
			do(t)
			defer undo(t)
			r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d")
			if r.code() != 1 {
				if r.code() == 0 {
					unix.Kill(w.pid, unix.SIGKILL)
					reap(w.pid, 10*time.Second)
				}
				t.Fatalf("%s: exit status %d, want 1; stderr: %s", r, r.code(), r.stderr())
			}
			if !strings.Contains(r.stderr(), p.path) || !strings.Contains(r.stderr(), "symlink") {
				t.Errorf("%s: the message does not name %s and the symlink: %s", r, p.path, r.stderr())
			}
			t.Logf("%s: %s", p.name, strings.TrimSpace(r.stderr()))
			watch.assertUntouched(p.name)
			assertFifoEmpty(t, hostFifo, p.name)
			if exists(w.pid) {
				t.Errorf("%s: a task holds PID %d after the failed restore: %s", p.name, w.pid, describe(w.pid))
			}
		})
	}
	if t.Failed() {
		return
	}
	restoreDetached(t, w, img, scenario{}, nil)
	watch.assertUntouched("the restore without links")
}

// craftedArchive is a gzipped tar of the given entries.
func craftedArchive(t *testing.T, hdrs []*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	gz := gzip.NewWriter(&b)
	tw := tar.NewWriter(gz)
	for _, h := range hdrs {
		if h.ModTime.IsZero() {
			h.ModTime = time.Now()
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(make([]byte, h.Size)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// archiveHolds reports whether the gzipped tar b has an entry name.
func archiveHolds(t *testing.T, b []byte, name string) bool {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err != nil {
			return false
		}
		if filepath.Clean(h.Name) == name {
			return true
		}
	}
}

// TestContainerTmpfsArchiveEscapes: the tmpfs archive in a container
// checkpoint is replaced by crafted ones: a symlink to a host directory
// then a setuid file through it; a symlink climbing out then a file
// through it; a symlink to a host file then a directory entry of the
// same name mode 0777. Restore must fail (exit 17, naming the entry)
// and create nothing on the host nor change the mode of a host file.
// The genuine archive then restores.
func TestContainerTmpfsArchiveEscapes(t *testing.T) {
	c := newContainer(t, "taresc", nil)
	c.start()
	dir := filepath.Join(t.TempDir(), "ckpt")
	checkpointContainer(t, c, dir)
	// /data's archive is the one with the file the init wrote there.
	all, _ := filepath.Glob(filepath.Join(dir, "images", "tmpfs-dev-*.tar.gz.img"))
	var archives []string
	var genuine []byte
	for _, a := range all {
		b, err := os.ReadFile(a)
		if err != nil {
			t.Fatal(err)
		}
		if archiveHolds(t, b, "hello") {
			archives, genuine = append(archives, a), b
		}
	}
	if len(archives) != 1 {
		t.Fatalf("%d of the checkpoint's tmpfs archives (%v) hold /data/hello, want 1", len(archives), all)
	}
	host, _ := hostSecretDir(t)
	hostFile := filepath.Join(host, "secret")
	cases := []struct {
		name, entry string
		hdrs        []*tar.Header
	}{
		{"a symlink to a host directory, then a setuid file through it", "esc/x", []*tar.Header{
			{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: host, Mode: 0o777},
			{Name: "esc/x", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 16},
		}},
		{"a symlink climbing out, then a file through it", "up/y", []*tar.Header{
			{Name: "up", Typeflag: tar.TypeSymlink, Linkname: climbTo(host), Mode: 0o777},
			{Name: "up/y", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 16},
		}},
		{"a symlink to a host directory, then a directory through it", "esc/sub", []*tar.Header{
			{Name: "esc", Typeflag: tar.TypeSymlink, Linkname: host, Mode: 0o777},
			{Name: "esc/sub/", Typeflag: tar.TypeDir, Mode: 0o777},
		}},
		{"a symlink to a host file, then a directory entry of its name mode 0777", "lnk", []*tar.Header{
			{Name: "lnk", Typeflag: tar.TypeSymlink, Linkname: hostFile, Mode: 0o777},
			{Name: "lnk/", Typeflag: tar.TypeDir, Mode: 0o777},
		}},
		{"a symlink to a host file, then a file entry of its name mode 4755", "lnk", []*tar.Header{
			{Name: "lnk", Typeflag: tar.TypeSymlink, Linkname: hostFile, Mode: 0o777},
			{Name: "lnk", Typeflag: tar.TypeReg, Mode: 0o4755, Size: 16},
		}},
	}
	watch := watchHostDir(t, host)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(archives[0], craftedArchive(t, tc.hdrs), 0o600); err != nil {
				t.Fatal(err)
			}
			dropManifests(t, dir)
			r := runCtcr(t, 60*time.Second, "restore", c.id, "-D", dir)
			if r.code() == 0 {
				c.notePid()
				stopRestored(t, c)
				t.Errorf("%s: restore succeeded with a crafted archive", r)
			} else if r.code() != 17 {
				t.Errorf("%s: exit status %d, want 17; stderr: %s", r, r.code(), r.stderr())
			}
			if !strings.Contains(r.stderr(), `entry "`+tc.entry) {
				t.Errorf("%s: the message does not name the entry %q: %s", r, tc.entry, r.stderr())
			}
			t.Logf("%s: %s", tc.name, strings.TrimSpace(r.stderr()))
			watch.assertUntouched(tc.name)
			if st, err := os.Stat(hostFile); err != nil || st.Mode().Perm() != 0o600 || st.Mode()&(os.ModeSetuid|os.ModeDir) != 0 {
				t.Errorf("%s: the host file %s is now %v (%v), want -rw-------", tc.name, hostFile, st.Mode(), err)
			}
			ents, _ := os.ReadDir(host)
			if len(ents) != 2 {
				t.Errorf("%s: the host directory holds %d entries, want 2 (secret, fifo)", tc.name, len(ents))
			}
			watch.events() // the test's own listing

		})
	}
	if err := os.WriteFile(archives[0], genuine, 0o600); err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		return
	}
	restoreContainer(t, c, dir)
	if got := c.mustExec(t, "cat /data/hello"); !strings.Contains(got, "written before the checkpoint") {
		t.Errorf("after restoring the genuine archive /data/hello holds %q", got)
	}
}

// dropManifests removes the checkpoint's manifests (manifest.json, in
// the bundle and in images/): the crafted archive is meant to reach
// extraction, and a manifest would rightly refuse it as damaged first.
// Without one, restore goes on with a warning, as for CRIU's images.
func dropManifests(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() == "manifest.json" {
			err = os.Remove(p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// victimFile makes a root-owned host file that planted links point at.
func victimFile(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("VICTIM "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// assertVictims fails unless every victim still holds its own content
// and mode, and no file was created beside them.
func assertVictims(t *testing.T, dir string, victims []string, what string) {
	t.Helper()
	for _, v := range victims {
		b, err := os.ReadFile(v)
		st, serr := os.Stat(v)
		if err != nil || string(b) != "VICTIM "+filepath.Base(v)+"\n" || serr != nil || st.Mode().Perm() != 0o644 {
			t.Errorf("%s: the host file %s was overwritten or changed: now %.60q (%v)", what, v, b, err)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != len(victims) {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("%s: the victims' directory holds %v, want only the %d victims", what, names, len(victims))
	}
}

// TestPlantedTempFileLinks: links planted at the names ctcr writes
// through (a pidfile and its old temporary name, a bundle's json files
// and their old temporary names, a container's lock file) lead at
// root-owned host files: none is written, truncated, created or
// chmodded, and what ctcr writes ends up in place as a regular file of
// the mode it should have.
func TestPlantedTempFileLinks(t *testing.T) {
	t.Run("restore --pidfile", func(t *testing.T) {
		needCtcr(t)
		victims := t.TempDir()
		base := t.TempDir()
		w := startWorkload(t, "paths", base+"/f/file", base+"/p/fifo", base+"/s/sock")
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		pdir := t.TempDir()
		pidfile := filepath.Join(pdir, "pid")
		vs := []string{victimFile(t, victims, "a"), victimFile(t, victims, "b")}
		for _, l := range [][2]string{{pidfile, vs[0]}, {pidfile + ".tmp", vs[1]}} {
			if err := os.Symlink(l[1], l[0]); err != nil {
				t.Fatal(err)
			}
		}
		r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d", "--pidfile", pidfile)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d; stderr: %s", r, r.code(), r.stderr())
		}
		assertVictims(t, victims, vs, "restore --pidfile")
		var st unix.Stat_t
		if err := unix.Lstat(pidfile, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			t.Errorf("the pidfile %s is not a regular file now (mode %#o, %v)", pidfile, st.Mode, err)
		}
		if b, _ := os.ReadFile(pidfile); strings.TrimSpace(string(b)) != strconv.Itoa(w.pid) {
			t.Errorf("the pidfile holds %q, want %d", b, w.pid)
		}
		w.requestCheck()
		if ws, reaped, err := reap(w.pid, 60*time.Second); err != nil || !reaped || ws.ExitStatus() != 0 {
			t.Errorf("the restored task: %v %v %v%s", ws, reaped, err, w.report())
		}
		w.assertPassed()
	})
	t.Run("container lock file", func(t *testing.T) {
		c := newContainer(t, "locklink", nil)
		c.start()
		victims := t.TempDir()
		dir := filepath.Join(t.TempDir(), "ckpt")
		// A dangling link at the lock file in /run/ctcr would make the
		// host file it names.
		lock := filepath.Join("/run/ctcr", c.id+".lock")
		os.MkdirAll("/run/ctcr", 0o700)
		if err := os.Symlink(filepath.Join(victims, "made-through-the-lock"), lock); err != nil {
			t.Fatal(err)
		}
		r := runCtcr(t, 60*time.Second, "checkpoint", c.id, "-D", dir)
		os.Remove(lock)
		if r.code() == 0 {
			t.Errorf("%s with a symlink at its lock file %s: exit status 0", r, lock)
		} else if !strings.Contains(r.stderr(), lock) {
			t.Errorf("%s: the message does not name the lock file %s: %s", r, lock, r.stderr())
		}
		t.Logf("lock file link: %s", strings.TrimSpace(r.stderr()))
		assertVictims(t, victims, nil, "a link at the lock file")
		if st := c.status(); st != "running" {
			t.Errorf("after a refused checkpoint the container is %q", st)
		}
	})
	t.Run("container checkpoint into a bundle", func(t *testing.T) {
		c := newContainer(t, "tmplinks", nil)
		c.start()
		victims := t.TempDir()
		dir := filepath.Join(t.TempDir(), "ckpt")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var vs []string
		for _, name := range []string{"config.json", "stats.json", "ctcr.json"} {
			at := []string{name, name + ".ctcr-tmp"}
			if name == "ctcr.json" {
				// A ctcr.json there, link or not, means "a checkpoint
				// already": checkpoint refuses the directory.
				at = at[1:]
			}
			for _, at := range at {
				v := victimFile(t, victims, at)
				vs = append(vs, v)
				if err := os.Symlink(v, filepath.Join(dir, at)); err != nil {
					t.Fatal(err)
				}
			}
		}
		checkpointContainer(t, c, dir)
		assertVictims(t, victims, vs, "checkpoint into a bundle with planted links")
		for _, name := range []string{"config.json", "stats.json", "ctcr.json"} {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(dir, name), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Mode&0o777 != 0o600 {
				t.Errorf("the bundle's %s: mode %#o (%v), want a regular file 0600", name, st.Mode, err)
			}
		}
		if st, err := os.Stat("/run/ctcr"); err != nil || st.Mode().Perm() != 0o700 {
			t.Errorf("/run/ctcr: %v (%v), want a directory 0700", st.Mode(), err)
		}
		// Not restored: the planted links stay in the bundle, where the
		// checkpoint's manifest lists them and restore (rightly) refuses
		// them as links to no checkpoint.
	})
}
