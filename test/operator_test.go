package test

import (
	"encoding/json"
	"fmt"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The operator's day (issue 13): install, exit codes, generations of
// container checkpoints, a container restored after its runtime's record
// was deleted.

// TestInstall: make install into a DESTDIR puts a working ctcr in
// PREFIX/sbin, with man pages, completions and the vzctl wrappers, and
// the installed binary says its version and commit.
func TestInstall(t *testing.T) {
	needCtcr(t)
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make is not installed")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	dest := t.TempDir()
	cmd := exec.Command("make", "-C", root, "install", "DESTDIR="+dest, "PREFIX=/usr")
	cmd.Env = append(os.Environ(), "PATH="+os.Getenv("PATH")+":/usr/local/go/bin")
	if out, err := outputWithTimeout(cmd, 5*time.Minute); err != nil {
		t.Fatalf("make install DESTDIR=%s PREFIX=/usr: %v\n%s", dest, err, out)
	}
	bin := filepath.Join(dest, "usr/sbin/ctcr")
	for _, f := range []string{"usr/sbin/ctcr", "usr/libexec/ctcr/vzctl-chkpnt", "usr/libexec/ctcr/vzctl-restore",
		"usr/share/man/man8/ctcr.8", "usr/share/man/man8/ctcr-checkpoint.8", "usr/share/man/man8/ctcr-checkpoints.8",
		"usr/share/bash-completion/completions/ctcr", "usr/share/zsh/site-functions/_ctcr"} {
		fi, err := os.Stat(filepath.Join(dest, f))
		if err != nil || fi.Size() == 0 {
			t.Errorf("make install left no %s (%v)", f, err)
		}
	}
	commitRe := `[0-9a-f]{7,}(-dirty)?`
	if exec.Command("git", "-C", root, "rev-parse", "HEAD").Run() != nil {
		commitRe = `unknown` // not a git checkout: nothing to name
	}
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil || !regexp.MustCompile(`^ctcr \d+\.\d+\.\d+ \(commit `+commitRe+`, go1\.`).Match(out) {
		t.Errorf("%s --version: %v: %q, want ctcr VERSION (commit HASH, goVERSION)", bin, err, out)
	}
	out, err = exec.Command(bin, "version", "--json").Output()
	var v struct {
		Version, Commit, Go string
		Features            []string          `json:"kernel_features"`
		Format              map[string]string `json:"image_format"`
	}
	if err != nil || json.Unmarshal(out, &v) != nil || v.Version == "" || !regexp.MustCompile(`^`+commitRe+`$`).MatchString(v.Commit) || v.Go == "" || len(v.Features) == 0 || v.Format["criu_images"] == "" {
		t.Errorf("%s version --json: %v: %s, want version, commit, go, image_format and kernel_features", bin, err, out)
	}
	// The installed binary does the work, not only --version.
	out, err = exec.Command(bin, "check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Looks good.") {
		t.Errorf("%s check: %v\n%s", bin, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, " NO ") && strings.Contains(l, "optional") {
			t.Errorf("%s check calls a missing optional feature NO, as if ctcr needed it: %s", bin, l)
		}
	}
	if out, err := exec.Command("man", "-l", filepath.Join(dest, "usr/share/man/man8/ctcr-checkpoint.8")).CombinedOutput(); err == nil && !strings.Contains(string(out), "--keep") {
		t.Errorf("man ctcr-checkpoint does not list --keep:\n%s", out)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "usr/share/bash-completion/completions/ctcr")); !strings.Contains(string(b), "__start_ctcr") {
		t.Errorf("the bash completion is not cobra's for ctcr")
	}
}

// exitsInHelp returns the codes the "Exit status" section of a
// command's --help lists.
func exitsInHelp(t *testing.T, args ...string) []int {
	t.Helper()
	r := runCtcr(t, 20*time.Second, append(args, "--help")...)
	help := r.stdout()
	i := strings.Index(help, "Exit status:\n")
	if r.code() != 0 || i < 0 {
		t.Fatalf("ctcr %s --help: exit status %d, no Exit status section:\n%s", strings.Join(args, " "), r.code(), help)
	}
	var codes []int
	for _, l := range strings.Split(help[i:], "\n")[1:] {
		f := strings.Fields(l)
		if len(f) == 0 {
			break
		}
		if n, err := strconv.Atoi(f[0]); err == nil && strings.HasPrefix(l, fmt.Sprintf("%4d  ", n)) {
			codes = append(codes, n)
		}
	}
	return codes
}

// pidContainer is a process in a freezer cgroup of its own: a
// container ctcr knows by --pid, with no runtime needed.
type pidContainer struct {
	id     string
	cmd    *exec.Cmd
	cgroup string
}

func newPidContainer(t *testing.T) *pidContainer {
	t.Helper()
	c := &pidContainer{id: fmt.Sprintf("ctcrt-op-%d-%d", os.Getpid(), containerSeq.Add(1))}
	c.cgroup = filepath.Join("/sys/fs/cgroup/freezer", c.id)
	if err := os.Mkdir(c.cgroup, 0o755); err != nil {
		t.Skipf("no v1 freezer to make %s in: %v", c.cgroup, err)
	}
	// The shell joins the cgroup before it execs sleep.
	c.cmd = exec.Command("sh", "-c", `echo $$ > "$0/cgroup.procs" && exec sleep 100000`, c.cgroup)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.cleanup(t) })
	deadline := time.Now().Add(5 * time.Second)
	for {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", c.cmd.Process.Pid)); strings.HasPrefix(string(b), "sleep") {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test's container process %d did not exec sleep", c.cmd.Process.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (c *pidContainer) pid() int { return c.cmd.Process.Pid }

func (c *pidContainer) cleanup(t *testing.T) {
	if b, err := os.ReadFile(filepath.Join(c.cgroup, "cgroup.procs")); err == nil {
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				unix.Kill(p, unix.SIGKILL)
				reap(p, 5*time.Second)
			}
		}
	}
	c.cmd.Process.Kill()
	c.cmd.Wait()
	for deadline := time.Now().Add(5 * time.Second); os.Remove(c.cgroup) != nil && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	os.RemoveAll(filepath.Join("/var/lib/ctcr", c.id))
	for _, suffix := range []string{".lock", ".init.json"} {
		os.Remove(filepath.Join("/run/ctcr", c.id+suffix))
	}
}

// TestExitCodeTable drives every command into each exit status it can
// return and checks the status, that stderr is one line saying what was
// wrong, that --json failures say so on stdout, and that the command's
// --help lists the status.
func TestExitCodeTable(t *testing.T) {
	needCtcr(t)
	tmp := t.TempDir()
	nosuch := fmt.Sprintf("ctcrt-nosuch-%d", os.Getpid())
	file := filepath.Join(tmp, "file")
	os.WriteFile(file, nil, 0o644)
	c := newPidContainer(t)
	pid := strconv.Itoa(c.pid())
	ck := filepath.Join(tmp, "ck")

	type call struct {
		name string
		args []string
		code int
		says string // stderr holds it
	}
	calls := []call{
		// Bad usage: missing, extra, unknown.
		{"dump without -t", []string{"dump", "-D", ck}, 2, "-t PID"},
		{"dump with an operand", []string{"dump", "extra"}, 2, `no arguments, got "extra"`},
		{"dump with an unknown flag", []string{"dump", "--overwrite"}, 2, "unknown flag: --overwrite"},
		{"pre-dump without -D", []string{"pre-dump", "-t", pid}, 2, "-D DIR"},
		{"restore with two operands", []string{"restore", "a", "b"}, 2, `extra "b"`},
		{"restore without -D or CTID", []string{"restore"}, 2, "-D DIR"},
		{"show without DIR", []string{"show"}, 2, "show needs DIR"},
		{"check with an operand", []string{"check", "x"}, 2, "no arguments"},
		{"checkpoint without CTID", []string{"checkpoint"}, 2, "checkpoint needs CTID"},
		{"checkpoint with two stages", []string{"checkpoint", nosuch, "--suspend", "--kill"}, 2, "separate stages"},
		{"checkpoint --keep with -D", []string{"checkpoint", nosuch, "--keep", "2", "-D", ck}, 2, "--keep"},
		{"checkpoints without CTID", []string{"checkpoints"}, 2, "checkpoints needs CTID"},
		{"ps without CTID", []string{"ps"}, 2, "ps needs CTID"},
		{"kill without CTID", []string{"kill"}, 2, "kill needs CTID"},
		{"kill with a bad signal", []string{"kill", nosuch, "NOSIG"}, 2, "unknown signal"},
		{"list with an operand", []string{"list", "x"}, 2, "no arguments"},
		{"hook without an action", []string{"hook"}, 2, "hook needs ACTION"},
		{"version with an operand", []string{"version", "x"}, 2, "no arguments"},
		{"an unknown command", []string{"nosuch"}, 2, `unknown command "nosuch"`},
		{"--lxcpath on a command that ignores it", []string{"dump", "--lxcpath", tmp}, 2, "unknown flag: --lxcpath"},
		// Unknown container: 1 everywhere.
		{"checkpoint of an unknown container", []string{"checkpoint", nosuch}, 1, "no such container"},
		{"restore of an unknown container", []string{"restore", nosuch}, 1, "no such container"},
		{"ps of an unknown container", []string{"ps", nosuch}, 1, "no such container"},
		{"kill of an unknown container", []string{"kill", nosuch}, 1, "no such container"},
		{"checkpoints of an unknown container", []string{"checkpoints", nosuch}, 1, "no such container"},
		{"the suspend stage of an unknown container", []string{"checkpoint", nosuch, "--suspend"}, 1, "no such container"},
		{"the resume stage of a restore of an unknown container", []string{"restore", nosuch, "--resume"}, 1, "no such container"},
		{"restore --checkpoint of a missing generation", []string{"restore", nosuch, "--checkpoint", "20200101T000000.000Z"}, 1, "no such container"},
		// Other failures before anything is done: 1.
		{"dump of a missing process", []string{"dump", "-t", strconv.Itoa(freePID(t)), "-D", filepath.Join(tmp, "d1")}, 1, "task"},
		{"dump of ctcr's own ancestor", []string{"dump", "-t", strconv.Itoa(os.Getpid()), "-D", filepath.Join(tmp, "d2")}, 1, "is an ancestor of ctcr"},
		{"show of a directory with no checkpoint", []string{"show", tmp}, 1, tmp},
		{"hook with a malformed state", []string{"hook", "poststop"}, 1, "hook poststop"},
		{"checkpoint --pid of a process with no cgroup of its own", []string{"checkpoint", nosuch, "--pid", strconv.Itoa(os.Getppid())}, 1, "has no cgroup of its own"},
		// The container's condition and what a checkpoint or restore
		// under way meets.
		{"checkpoint of a container into an image directory under a file", []string{"checkpoint", c.id, "--pid", pid, "-D", filepath.Join(file, "ck")}, 16, file},
		{"checkpoint --leave-running", []string{"checkpoint", c.id, "--pid", pid, "-D", ck, "--leave-running"}, 0, ""},
		{"checkpoint -D onto a checkpoint without --force", []string{"checkpoint", c.id, "--pid", pid, "-D", ck, "--leave-running"}, 1, "--force"},
		{"checkpoint -D onto a checkpoint with --force", []string{"checkpoint", c.id, "--pid", pid, "-D", ck, "--leave-running", "--force"}, 0, ""},
		{"restore of the running container", []string{"restore", c.id, "-D", ck}, 32, "running"},
		{"restore while another process holds the init's PID", []string{"restore", c.id, "-D", ck}, 17, pid},
		{"ps of the container", []string{"ps", c.id, "--pid", pid}, 0, ""},
		{"kill of the container", []string{"kill", c.id, "KILL", "--pid", pid}, 0, ""},
		{"checkpoint of the ended container", []string{"checkpoint", c.id, "--pid", pid, "-D", filepath.Join(tmp, "ck2")}, 31, "not running"},
		{"kill of the ended container", []string{"kill", c.id, "--pid", pid}, 31, "not running"},
		{"restore of the ended container", []string{"restore", c.id, "-D", ck}, 0, ""},
		{"restore of the container running again", []string{"restore", c.id, "-D", ck}, 32, "running"},
		{"kill of the restored container", []string{"kill", c.id}, 0, ""},
	}

	seen := map[string][]int{}
	for _, tc := range calls {
		t.Run(fmt.Sprintf("%s exits %d", tc.name, tc.code), func(t *testing.T) {
			if tc.name == "restore while another process holds the init's PID" {
				// Out of the container's cgroup, the init is just
				// another process: the restore begins (its cgroups
				// made), then meets the PID taken.
				if err := os.WriteFile("/sys/fs/cgroup/freezer/cgroup.procs", []byte(pid), 0); err != nil {
					t.Fatal(err)
				}
				defer func() {
					if err := os.WriteFile(filepath.Join(c.cgroup, "cgroup.procs"), []byte(pid), 0); err != nil {
						t.Fatal(err)
					}
				}()
			}
			r := runCtcr(t, 60*time.Second, tc.args...)
			switch tc.name {
			case "kill of the container":
				c.cmd.Wait() // the test's child: reaped, its PID no longer alive
			case "kill of the restored container":
				reap(c.pid(), 5*time.Second) // restored, it is the test's (a subreaper's) child
			}
			if r.code() != tc.code {
				t.Fatalf("%s: exit status %d, want %d\nstderr: %s", r, r.code(), tc.code, r.stderr())
			}
			cmdName := tc.args[0]
			if cmdName == "nosuch" {
				cmdName = "" // an unknown command: ctcr's own --help
			}
			seen[cmdName] = append(seen[cmdName], tc.code)
			if tc.code == 0 {
				return
			}
			if se := strings.TrimSpace(r.stderr()); strings.Count(se, "\n") != 0 || !strings.Contains(se, tc.says) {
				t.Errorf("%s: stderr %q, want one line saying %q", r, se, tc.says)
			}
			if strings.Contains(r.stderr(), "panic") || strings.Contains(r.stderr(), "accepts ") {
				t.Errorf("%s: stderr %q reads as cobra's or a panic", r, r.stderr())
			}
		})
	}
	t.Run("a failure with --json prints the error and the status on stdout", func(t *testing.T) {
		for _, args := range [][]string{{"checkpoint", nosuch, "--json"}, {"dump", "-t", strconv.Itoa(freePID(t)), "-D", filepath.Join(tmp, "d3"), "--json"}, {"ps", "--json"}} {
			r := runCtcr(t, 20*time.Second, args...)
			var out struct {
				Error string
				Exit  int
			}
			if err := json.Unmarshal([]byte(r.stdout()), &out); err != nil || out.Exit != r.code() || out.Error == "" || r.code() == 0 {
				t.Errorf("%s: exit status %d, stdout %q (%v), want {\"error\": ..., \"exit\": %d}", r, r.code(), r.stdout(), err, r.code())
			}
		}
	})
	t.Run("no lock file is left by a command that found no container", func(t *testing.T) {
		for _, suffix := range []string{".lock", ".init.json"} {
			if _, err := os.Stat(filepath.Join("/run/ctcr", nosuch+suffix)); err == nil {
				t.Errorf("/run/ctcr/%s%s exists after commands on an unknown container", nosuch, suffix)
			}
		}
		if _, err := os.Stat(filepath.Join("/var/lib/ctcr", nosuch)); err == nil {
			t.Errorf("/var/lib/ctcr/%s exists after commands on an unknown container", nosuch)
			os.RemoveAll(filepath.Join("/var/lib/ctcr", nosuch))
		}
	})
	t.Run("without CAP_SYS_PTRACE dump, restore and checkpoint are refused up front", func(t *testing.T) {
		// A copy nobody can reach: t.TempDir's parents are 0700.
		pub, err := os.MkdirTemp("", "ctcr-nobody-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(pub)
		os.Chmod(pub, 0o755)
		bin := filepath.Join(pub, "ctcr")
		b, err := os.ReadFile(ctcrBin)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(bin, b, 0o755)
		for _, args := range [][]string{{"dump", "-t", pid, "-D", filepath.Join(tmp, "np1")}, {"restore", "-D", filepath.Join(tmp, "np2")},
			{"checkpoint", c.id, "-D", filepath.Join(tmp, "np3")}, {"restore", c.id, "-D", filepath.Join(tmp, "np4")}, {"pre-dump", "-t", pid, "-D", filepath.Join(tmp, "np5")}} {
			cmd := exec.Command(bin, args...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			code := -1
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			}
			if code != 1 || !strings.Contains(string(out), "CAP_SYS_PTRACE") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
				t.Errorf("ctcr %s as uid 65534: exit status %d, output %q; want 1 and one line naming CAP_SYS_PTRACE", strings.Join(args, " "), code, out)
			}
			seen[args[0]] = append(seen[args[0]], code)
		}
		for _, d := range []string{"np1", "np2", "np3", "np4", "np5"} {
			if _, err := os.Stat(filepath.Join(tmp, d)); err == nil {
				t.Errorf("the refused command created %s", filepath.Join(tmp, d))
			}
		}
	})
	t.Run("every status a command returned is in its --help, and no other container code", func(t *testing.T) {
		for name, codes := range seen {
			var args []string
			if name != "" {
				args = []string{name}
			}
			listed := exitsInHelp(t, args...)
			for _, code := range codes {
				if !slices.Contains(listed, code) {
					t.Errorf("ctcr %s exited %d, which its --help does not list (it lists %v)", name, code, listed)
				}
			}
		}
		for _, name := range []string{"ps", "kill", "list", "show", "dump", "checkpoints"} {
			listed := exitsInHelp(t, name)
			for _, code := range []int{16, 17} {
				if slices.Contains(listed, code) {
					t.Errorf("ctcr %s --help lists %d, which it cannot return", name, code)
				}
			}
		}
		for _, name := range []string{"dump", "check", "show", "version", "pre-dump"} {
			r := runCtcr(t, 20*time.Second, name, "--help")
			if strings.Contains(r.stdout(), "--lxcpath") {
				t.Errorf("ctcr %s --help offers --lxcpath, which it does not use", name)
			}
		}
	})
}

// checkpointCount reads /data/count of c right after a checkpoint.
func checkpointGeneration(t *testing.T, c *runcContainer, extra ...string) (count int) {
	t.Helper()
	r := runCtcr(t, 60*time.Second, append([]string{"checkpoint", c.id, "--leave-running", "--json"}, extra...)...)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d\nstderr: %s", r, r.code(), r.stderr())
	}
	n, err := c.count("count")
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// generations lists the container's checkpoints with ctcr checkpoints --json.
type generation struct {
	Name     string
	Dir      string
	Latest   bool
	Complete bool
	Bytes    int64
}

func listGenerations(t *testing.T, id string) []generation {
	t.Helper()
	r := runCtcr(t, 20*time.Second, "checkpoints", id, "--json")
	var gens []generation
	if r.code() != 0 || json.Unmarshal([]byte(r.stdout()), &gens) != nil {
		t.Fatalf("%s: exit status %d, stdout %q, stderr %q", r, r.code(), r.stdout(), r.stderr())
	}
	return gens
}

// TestContainerGenerations: three checkpoints of one runc container in a
// row, without -D, each a new generation; latest names the newest;
// restore takes latest, or an older one by --checkpoint; --keep prunes.
func TestContainerGenerations(t *testing.T) {
	c := newContainer(t, "gen", nil)
	c.start()
	var counts []int
	for i := 0; i < 3; i++ {
		c.waitCount(t, c.assertCounting(t, "between checkpoints")+3, 10*time.Second)
		counts = append(counts, checkpointGeneration(t, c))
	}
	gens := listGenerations(t, c.id)
	if len(gens) != 3 {
		t.Fatalf("after three checkpoints ctcr checkpoints lists %d: %+v", len(gens), gens)
	}
	for i, g := range gens {
		if !g.Complete || g.Bytes == 0 || g.Latest != (i == 2) {
			t.Errorf("generation %d of 3: %+v, want complete, with a size, latest only for the newest", i+1, g)
		}
	}
	if l, err := os.Readlink(filepath.Join("/var/lib/ctcr", c.id, "latest")); err != nil || l != gens[2].Name {
		t.Errorf("/var/lib/ctcr/%s/latest -> %q (%v), want %s", c.id, l, err, gens[2].Name)
	}
	r := runCtcr(t, 20*time.Second, "checkpoints", c.id)
	if r.code() != 0 || strings.Count(r.stdout(), "complete") != 3 || !strings.Contains(r.stdout(), "latest") {
		t.Errorf("%s: exit status %d:\n%s", r, r.code(), r.stdout())
	}

	kill := func() {
		t.Helper()
		if out, err := c.cmd(20*time.Second, "", "kill", c.id, "KILL"); err != nil {
			t.Fatalf("runc kill: %v: %s", err, out)
		}
		c.waitStatus(t, "stopped", 10*time.Second)
		c.notePid()
		for _, p := range c.inits {
			reap(p, 5*time.Second)
		}
	}
	restore := func(args ...string) int {
		t.Helper()
		r := runCtcr(t, 60*time.Second, append([]string{"restore", c.id}, args...)...)
		if r.code() != 0 {
			t.Fatalf("%s: exit status %d\nstderr: %s", r, r.code(), r.stderr())
		}
		c.notePid()
		c.waitStatus(t, "running", 5*time.Second)
		n, err := c.count("count")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	t.Run("restore without --checkpoint takes latest", func(t *testing.T) {
		kill()
		if n := restore(); n <= counts[1] || n > counts[2]+5 {
			t.Errorf("after restore of latest /data/count is %d, want about %d (read after the third checkpoint; after the first two %d, %d)", n, counts[2], counts[0], counts[1])
		}
		c.assertCounting(t, "after restore of latest")
	})
	t.Run("restore --checkpoint takes an older generation", func(t *testing.T) {
		kill()
		if n := restore("--checkpoint", gens[0].Name); n >= counts[1] {
			t.Errorf("after restore of %s /data/count is %d, want about %d (the first checkpoint's), below %d (the second's)", gens[0].Name, n, counts[0], counts[1])
		}
		c.assertCounting(t, "after restore of the oldest generation")
	})
	t.Run("--keep 2 leaves the two newest", func(t *testing.T) {
		checkpointGeneration(t, c, "--keep", "2")
		after := listGenerations(t, c.id)
		if len(after) != 2 || after[0].Name != gens[2].Name || !after[1].Latest {
			t.Fatalf("after a fourth checkpoint with --keep 2 the generations are %+v, want the third and the new latest", after)
		}
		if _, err := os.Stat(gens[0].Dir); err == nil {
			t.Errorf("%s is still there after --keep 2", gens[0].Dir)
		}
	})
}

// TestManagedRestore: a runc (or crun) container checkpointed with
// --leave-running, then deleted with runc delete -f (its record gone, as
// when it is moved or replaced), is restored by ctcr restore CTID; ctcr
// writes the runtime's record back: runc list, state, exec, kill and
// delete and ctcr list, ps and kill manage it, and runc delete removes
// its cgroups.
func TestManagedRestore(t *testing.T) {
	for _, runtime := range []string{"runc", "crun"} {
		t.Run(runtime, func(t *testing.T) { testManagedRestore(t, runtime, false) })
	}
	// The usual order when a container is moved or replaced: the OCI
	// hook checkpoints it once warm, the runtime deletes it, ctcr
	// restores it.
	t.Run("runc, checkpointed by the OCI hook", func(t *testing.T) { testManagedRestore(t, "runc", true) })
}

func testManagedRestore(t *testing.T, runtime string, byHook bool) {
	dir := filepath.Join(t.TempDir(), "ck")
	var edit func(*specs.Spec)
	if byHook {
		edit = func(s *specs.Spec) {
			s.Annotations = map[string]string{"ctcr.checkpoint.dir": dir, "ctcr.checkpoint.ready-file": "/data/ready"}
			s.Hooks = &specs.Hooks{
				Poststart: []specs.Hook{{Path: ctcrBin, Args: []string{"ctcr", "hook", "poststart"}}},
				Poststop:  []specs.Hook{{Path: ctcrBin, Args: []string{"ctcr", "hook", "poststop"}}},
			}
		}
	}
	c := newRuntimeContainer(t, runtime, "managed", edit)
	c.start()
	var countAt int
	if byHook {
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			if _, err := os.Stat(filepath.Join(dir, "ctcr.json")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				log, _ := os.ReadFile(filepath.Join("/run/ctcr", c.id+".hook.log"))
				t.Fatalf("no checkpoint in %s 30 s after the container started; hook log:\n%s", dir, log)
			}
		}
		countAt = 5 // the ready file appears at 5
	} else {
		countAt = c.waitCount(t, 8, 10*time.Second)
		checkpointContainer(t, c, dir, "--leave-running")
	}
	var meta struct {
		Cgroups struct {
			V1 map[string]string `json:"v1"`
		} `json:"cgroups"`
		StateDir string `json:"state_dir"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "ctcr.json"))
	if err != nil || json.Unmarshal(b, &meta) != nil || meta.Cgroups.V1["freezer"] == "" {
		t.Fatalf("ctcr.json: %v: %s", err, b)
	}
	freezer := filepath.Join("/sys/fs/cgroup/freezer", meta.Cgroups.V1["freezer"])
	t.Cleanup(func() {
		// Should runc not know the restored container, its tasks and
		// cgroups are still found here.
		b, _ := os.ReadFile(filepath.Join(freezer, "cgroup.procs"))
		for _, f := range strings.Fields(string(b)) {
			if p, err := strconv.Atoi(f); err == nil {
				unix.Kill(p, unix.SIGKILL)
				reap(p, 5*time.Second)
			}
		}
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", meta.Cgroups.V1["freezer"]))
		for _, d := range dirs {
			os.Remove(d)
		}
	})
	if out, err := c.cmd(30*time.Second, "", "delete", "-f", c.id); err != nil {
		t.Fatalf("%s delete -f: %v: %s", runtime, err, out)
	}
	for _, p := range c.inits {
		reap(p, 5*time.Second)
	}
	if _, err := os.Stat(meta.StateDir); err == nil {
		t.Fatalf("%s delete left %s", runtime, meta.StateDir)
	}
	r := runCtcr(t, 60*time.Second, "restore", c.id, "-D", dir)
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d\nstderr: %s", r, r.code(), r.stderr())
	}
	c.notePid()
	st, err := c.state()
	if err != nil || st.Status != "running" {
		t.Fatalf("after the restore %s state says %+v (%v), want running", runtime, st, err)
	}
	if got, _ := c.count("count"); got < countAt {
		t.Errorf("after the restore /data/count is %d, below %d", got, countAt)
	}
	c.assertCounting(t, "after the restore")
	out, err := c.cmd(10*time.Second, "", "list")
	if err != nil || !regexp.MustCompile(`(?m)^`+regexp.QuoteMeta(c.id)+`\s+\d+\s+running`).Match(out) {
		t.Errorf("%s list: %v:\n%s\nwant %s running", runtime, err, out, c.id)
	}
	if out := c.mustExec(t, "cat /data/hello"); !strings.Contains(out, "written before the checkpoint") {
		t.Errorf("runc exec cat /data/hello: %q", out)
	}
	r = runCtcr(t, 20*time.Second, "list", "--json")
	if r.code() != 0 || !regexp.MustCompile(`"id":"`+regexp.QuoteMeta(c.id)+`","runtime":"`+runtime+`","status":"running"`).MatchString(r.stdout()) {
		t.Errorf("%s: exit status %d: %s", r, r.code(), r.stdout())
	}
	r = runCtcr(t, 20*time.Second, "ps", c.id)
	if r.code() != 0 || !strings.Contains(r.stdout(), "sleep 100000") {
		t.Errorf("%s: exit status %d: %s%s", r, r.code(), r.stdout(), r.stderr())
	}
	r = runCtcr(t, 20*time.Second, "kill", c.id, "TERM")
	if r.code() != 0 {
		t.Fatalf("%s: exit status %d: %s", r, r.code(), r.stderr())
	}
	c.waitStatus(t, "stopped", 10*time.Second)
	for _, p := range c.inits {
		reap(p, 5*time.Second) // the restored init is the test's child: no zombie in the cgroup
	}
	if out, err := c.cmd(30*time.Second, "", "delete", c.id); err != nil {
		t.Fatalf("%s delete of the restored container: %v: %s", runtime, err, out)
	}
	if _, err := os.Stat(freezer); err == nil {
		t.Errorf("%s delete left the restored container's cgroup %s", runtime, freezer)
	}
	if _, err := os.Stat(meta.StateDir); err == nil {
		t.Errorf("%s delete left %s", runtime, meta.StateDir)
	}
}
