package test

import (
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHostPostgres: PostgreSQL 15 run on the host (its own process tree,
// the host's IPC namespace: a SysV shared memory segment for its
// interlock, shared anonymous memory for its buffers) is checkpointed
// and restored with plain dump and restore. The rows written before are
// there after, a new connection (a new backend the restored postmaster
// forks) writes more, and the server shuts down cleanly.
func TestHostPostgres(t *testing.T) {
	needCtcr(t)
	if _, err := os.Stat(filepath.Join(postgresBin, "postgres")); err != nil {
		t.Skipf("%s/postgres is missing (apt-get install postgresql-15): %v", postgresBin, err)
	}
	pgUser, err := user.Lookup("postgres")
	if err != nil {
		t.Skipf("no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(pgUser.Uid)
	gid, _ := strconv.Atoi(pgUser.Gid)
	cred := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, Setsid: true}
	// t.TempDir() is root's alone: the server needs its own directory.
	base, err := os.MkdirTemp("", "ctcr-hostpg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	data, sock := filepath.Join(base, "data"), filepath.Join(base, "sock")
	for _, d := range []string{data, sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	initdb := exec.Command(filepath.Join(postgresBin, "initdb"), "-D", data, "-A", "trust")
	initdb.SysProcAttr = cred
	if out, err := initdb.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	port := strconv.Itoa(20000 + rand.Intn(20000))
	logPath := filepath.Join(base, "pg.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	pg := exec.Command(filepath.Join(postgresBin, "postgres"), "-D", data, "-k", sock, "-p", port, "-c", "listen_addresses=")
	pg.Stdout, pg.Stderr, pg.SysProcAttr = logf, logf, cred
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	pid := pg.Process.Pid
	t.Cleanup(func() {
		unix.Kill(pid, unix.SIGQUIT)
		reap(pid, 10*time.Second)
	})
	pgLog := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	psql := func(sql string) string {
		t.Helper()
		var out []byte
		var err error
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			c := exec.Command(filepath.Join(postgresBin, "psql"), "-h", sock, "-p", port, "-d", "postgres", "-Atc", sql)
			c.SysProcAttr = &syscall.SysProcAttr{Credential: cred.Credential}
			if out, err = c.CombinedOutput(); err == nil || time.Now().After(end) {
				break
			}
		}
		if err != nil {
			t.Fatalf("psql %q: %v: %s\n--- server log:\n%s", sql, err, out, pgLog())
		}
		return strings.TrimSpace(string(out))
	}
	psql("create table t(i int, s text); insert into t select g, md5(g::text) from generate_series(1, 100000) g")
	const want = "100000|5000050000"
	if got := psql("select count(*), sum(i) from t"); got != want {
		t.Fatalf("before the dump: %q, want %q", got, want)
	}
	segsBefore := hostSegmentsOf(t, pid)
	if len(segsBefore) == 0 {
		t.Fatalf("the postmaster maps no SysV segment: the test no longer checks what it should")
	}

	kids := childrenOf(pid)
	img := filepath.Join(t.TempDir(), "img")
	r := runCtcr(t, 120*time.Second, "dump", "-t", strconv.Itoa(pid), "-D", img, "-v")
	if r.code() != 0 {
		t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
	}
	pg.Wait()
	// The backends the dump killed were re-parented to this subreaper.
	for kid := range kids {
		if _, _, err := reap(kid, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(img, "host-sysv.json")); err != nil {
		t.Errorf("the checkpoint lists no host SysV objects: %v", err)
	}
	// As on another host, or after a reboot: the segment is gone, and
	// restore makes it again.
	for _, id := range segsBefore {
		n, _ := strconv.Atoi(id)
		if _, _, e := unix.Syscall(unix.SYS_SHMCTL, uintptr(n), unix.IPC_RMID, 0); e != 0 {
			t.Fatalf("remove segment %d after the dump: %v", n, e)
		}
	}
	r = runCtcr(t, 120*time.Second, "restore", "-D", img, "-d")
	if r.code() != 0 {
		t.Fatalf("%s: exit %d: %s\n--- server log:\n%s", r, r.code(), r.stderr(), pgLog())
	}
	if got := hostSegmentsOf(t, pid); strings.Join(got, ",") != strings.Join(segsBefore, ",") {
		t.Errorf("after restore the postmaster maps SysV segments %v, before %v", got, segsBefore)
	}
	if got := psql("select count(*), sum(i) from t"); got != want {
		t.Errorf("after restore: %q, want %q", got, want)
	}
	psql("insert into t select g, 'after' from generate_series(100001, 100010) g")
	if got := psql("select count(*) from t where s = 'after'"); got != "10" {
		t.Errorf("rows written after restore: %q, want 10", got)
	}
	// A clean shutdown: SIGINT is PostgreSQL's fast shutdown.
	unix.Kill(pid, unix.SIGINT)
	ws, _, err := reap(pid, 60*time.Second)
	if err != nil {
		t.Fatalf("the restored postmaster did not stop: %v\n%s", err, pgLog())
	}
	if !ws.Exited() || ws.ExitStatus() != 0 || !strings.Contains(pgLog(), "database system is shut down") {
		t.Errorf("the restored postmaster ended %s; server log:\n%s", exitText(ws), pgLog())
	}
}

// hostSegmentsOf lists the SysV segments pid maps, by id.
func hostSegmentsOf(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 6 && strings.HasPrefix(f[5], "/SYSV") {
			ids = append(ids, f[4])
		}
	}
	return ids
}

// readyNum returns the number a workload printed as "name N" in ready.
func (w *workload) readyNum(t *testing.T, name string) int {
	t.Helper()
	for _, line := range strings.Split(w.read("ready"), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("%s ready: %q: %v", w.name, line, err)
			}
			return n
		}
	}
	t.Fatalf("%s ready has no %q line: %s", w.name, name, w.read("ready"))
	return 0
}

// TestHostSysV: a process outside any container that uses a segment, a
// semaphore set and a message queue of the host's IPC namespace is
// dumped and restored with plain dump and restore. Objects gone by the
// restore (another host, a reboot) are made again with their ids, keys
// and contents; an object another process uses is left alone and the
// restore refused, naming it and the remedy, with nothing left behind.
func TestHostSysV(t *testing.T) {
	needCtcr(t)
	start := func(t *testing.T) (*workload, string, [3]int) {
		w := startWorkload(t, "hostsysv")
		ids := [3]int{w.readyNum(t, "shm"), w.readyNum(t, "sem"), w.readyNum(t, "msq")}
		t.Cleanup(func() {
			unix.Syscall(unix.SYS_SHMCTL, uintptr(ids[0]), unix.IPC_RMID, 0)
			unix.Syscall6(unix.SYS_SEMCTL, uintptr(ids[1]), 0, unix.IPC_RMID, 0, 0, 0)
			unix.Syscall(unix.SYS_MSGCTL, uintptr(ids[2]), unix.IPC_RMID, 0)
		})
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		w.reapDumped(t)
		return w, img, ids
	}
	t.Run("objects gone by the restore are made again with their ids and contents", func(t *testing.T) {
		w, img, ids := start(t)
		unix.Syscall(unix.SYS_SHMCTL, uintptr(ids[0]), unix.IPC_RMID, 0)
		unix.Syscall6(unix.SYS_SEMCTL, uintptr(ids[1]), 0, unix.IPC_RMID, 0, 0, 0)
		unix.Syscall(unix.SYS_MSGCTL, uintptr(ids[2]), unix.IPC_RMID, 0)
		if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
			t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
		}
		w.waited = true
		w.resultPasses(t, "restored with its SysV objects made again")
	})
	t.Run("the tree's own objects left by the dump are taken back", func(t *testing.T) {
		w, img, _ := start(t)
		if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
			t.Fatalf("%s: exit %d: %s", r, r.code(), r.stderr())
		}
		w.waited = true
		w.resultPasses(t, "restored over its own SysV objects")
	})
	t.Run("a segment another process attached is refused by name", func(t *testing.T) {
		w, img, ids := start(t)
		seg, err := unix.SysvShmAttach(ids[0], 0, unix.SHM_RDONLY)
		if err != nil {
			t.Fatal(err)
		}
		before := childrenOf(os.Getpid())
		r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d")
		assertFailed(t, r, fmt.Sprintf("segment %d", ids[0]))
		if !strings.Contains(r.stderr(), "ipcrm -m") {
			t.Errorf("%s: the message gives no remedy (ipcrm -m): %s", r, r.stderr())
		}
		reapZombies()
		assertNothingNew(t, before, r)
		if st, err := readStat(w.pid); err == nil && st.state != 'Z' {
			t.Errorf("the refused restore left %s", describe(w.pid))
		}
		unix.SysvShmDetach(seg)
		if r := runCtcr(t, 60*time.Second, "restore", "-D", img, "-d"); r.code() != 0 {
			t.Fatalf("%s once the segment was let go: exit %d: %s", r, r.code(), r.stderr())
		}
		w.waited = true
		w.resultPasses(t, "restored once the segment was let go")
	})
}
