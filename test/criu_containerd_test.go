package test

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// containerd (Debian's 1.6) checkpoints a task with runc through its
// shim; runc runs `criu` from PATH, here ctcr. The test runs a
// containerd of its own (its root, state and sockets in a temporary
// directory, the CRI plugin off) and imports a busybox image built as an
// OCI archive.

// containerdNS is the containerd namespace of the test; containerd names
// the tasks' cgroups after it (/ctcrt-criurpc/ID).
const containerdNS = "ctcrt-criurpc"

type containerdEnv struct {
	t    *testing.T
	dir  string
	sock string
	env  []string
	cmd  *exec.Cmd
}

func newContainerd(t *testing.T) *containerdEnv {
	t.Helper()
	for _, bin := range []string{"containerd", "ctr", "containerd-shim-runc-v2", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("%s is not installed (apt-get install containerd runc): the containerd test runs a real containerd", bin)
		}
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		t.Skip("/bin/busybox is missing (apt-get install busybox-static)")
	}
	link := criuLink(t)
	dir, err := os.MkdirTemp("", "ctcrcd-")
	if err != nil {
		t.Fatal(err)
	}
	e := &containerdEnv{t: t, dir: dir, sock: filepath.Join(dir, "c.sock")}
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), e.sock, filepath.Join(dir, "t.sock"))
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	e.env = append(os.Environ(), "PATH="+filepath.Dir(link)+":"+os.Getenv("PATH"))
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	e.cmd = exec.Command("containerd", "--config", filepath.Join(dir, "config.toml"))
	e.cmd.Env = e.env
	e.cmd.Stdout, e.cmd.Stderr = logf, logf
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start containerd: %v", err)
	}
	t.Cleanup(e.cleanup)
	for end := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := e.ctr("version"); err == nil {
			break
		}
		if time.Now().After(end) {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("containerd did not answer on %s within 20 s:\n%s", e.sock, b)
		}
	}
	return e
}

func (e *containerdEnv) ctr(args ...string) (string, error) {
	cmd := exec.Command("ctr", append([]string{"--address", e.sock, "--namespace", containerdNS}, args...)...)
	cmd.Env = e.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runWithTimeout(cmd, 90*time.Second)
	return out.String(), err
}

func (e *containerdEnv) must(args ...string) string {
	e.t.Helper()
	out, err := e.ctr(args...)
	if err != nil {
		var logs strings.Builder
		paths, _ := filepath.Glob(filepath.Join(e.dir, "state", "*", "*", "*", "*", "*.log"))
		more, _ := filepath.Glob(filepath.Join(e.dir, "root", "*", "*", "*", "*.log"))
		for _, p := range append(paths, more...) {
			b, _ := os.ReadFile(p)
			fmt.Fprintf(&logs, "\n--- %s:\n%s", p, b)
		}
		e.t.Fatalf("ctr %s: %v\n%s%s", strings.Join(args, " "), err, out, logs.String())
	}
	return out
}

func (e *containerdEnv) cleanup() {
	out, _ := e.ctr("tasks", "ls", "-q")
	for _, id := range strings.Fields(out) {
		e.ctr("tasks", "kill", "-s", "KILL", id)
		time.Sleep(200 * time.Millisecond)
		e.ctr("tasks", "delete", "-f", id)
	}
	out, _ = e.ctr("containers", "ls", "-q")
	for _, id := range strings.Fields(out) {
		e.ctr("containers", "delete", id)
	}
	e.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { e.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		e.cmd.Process.Kill()
		<-done
	}
	// containerd's mounts below its root (overlay snapshots, shm).
	b, _ := os.ReadFile("/proc/self/mountinfo")
	var mps []string
	for _, l := range strings.Split(string(b), "\n") {
		if fs := strings.Fields(l); len(fs) > 4 && strings.HasPrefix(fs[4], e.dir+"/") {
			mps = append(mps, fs[4])
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		exec.Command("umount", "-l", mps[i]).Run()
	}
	// The cgroups containerd made for the namespace, once empty.
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/" + containerdNS + "/*")
	more, _ := filepath.Glob("/sys/fs/cgroup/*/" + containerdNS)
	for _, d := range append(dirs, more...) {
		os.Remove(d)
	}
}

// ociArchive writes an OCI image layout archive of the directory rootfs
// (one uncompressed layer) to path, for `ctr image import`.
func ociArchive(t *testing.T, rootfs, path, name string) {
	t.Helper()
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	err := filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == rootfs {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		h.Name, _ = filepath.Rel(rootfs, p)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if fi.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = io.Copy(tw, f)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		t.Fatalf("layer of %s: %v", rootfs, err)
	}
	type desc struct {
		MediaType   string            `json:"mediaType"`
		Digest      string            `json:"digest"`
		Size        int               `json:"size"`
		Annotations map[string]string `json:"annotations,omitempty"`
	}
	blobs := map[string][]byte{}
	add := func(media string, b []byte) desc {
		sum := sha256.Sum256(b)
		d := desc{MediaType: media, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: len(b)}
		blobs[hex.EncodeToString(sum[:])] = b
		return d
	}
	layerDesc := add("application/vnd.oci.image.layer.v1.tar", layer.Bytes())
	config, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Cmd": []string{"sh"}, "Env": []string{"PATH=/bin"}},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layerDesc.Digest}},
	})
	configDesc := add("application/vnd.oci.image.config.v1+json", config)
	manifest, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": configDesc, "layers": []desc{layerDesc},
	})
	manifestDesc := add("application/vnd.oci.image.manifest.v1+json", manifest)
	manifestDesc.Annotations = map[string]string{"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name}
	index, _ := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{manifestDesc}})

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := tar.NewWriter(f)
	put := func(name string, b []byte) {
		if err := out.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := out.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	put("index.json", index)
	for sum, b := range blobs {
		put("blobs/sha256/"+sum, b)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// count reads a counter of the container, again if it was caught
// between the script's truncation and write (see podmanEnv.count).
func (e *containerdEnv) count(id, file string) (int, error) {
	for try := 0; ; try++ {
		out, err := e.ctr("tasks", "exec", "--exec-id", fmt.Sprintf("cat%d", time.Now().UnixNano()), id, "cat", "/data/"+file)
		if err != nil {
			return 0, fmt.Errorf("%v: %s", err, out)
		}
		if strings.TrimSpace(out) == "" && try < 5 {
			time.Sleep(30 * time.Millisecond)
			continue
		}
		var n int
		_, err = fmt.Sscanf(strings.TrimSpace(out), "%d", &n)
		return n, err
	}
}

func (e *containerdEnv) waitCount(id string, n int, timeout time.Duration) int {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := e.count(id, "count")
		if err == nil && got >= n {
			return got
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("container %s: /data/count is %d (%v) after %v, want >= %d", id, got, err, timeout, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestCriuContainerdCheckpointRestoreLive(t *testing.T) {
	e := newContainerd(t)
	rootfs := filepath.Join(e.dir, "rootfs")
	buildBusyboxRootfs(t, rootfs)
	const image = "localhost/ctcrt-busybox:1"
	archive := filepath.Join(e.dir, "busybox.tar")
	ociArchive(t, rootfs, archive, image)
	e.must("images", "import", "--no-unpack=false", archive)
	const id = "ctcrt-cd"
	e.must("run", "-d", image, id, "sh", "-c", containerScript)
	e.waitCount(id, 5, 15*time.Second)
	countAt, _ := e.count(id, "count")
	subAt, _ := e.count(id, "sub")

	start := time.Now()
	e.must("containers", "checkpoint", "--task", id, "ctcrt/checkpoint:1")
	t.Logf("ctr containers checkpoint --task through ctcr: %v", time.Since(start))
	e.must("tasks", "kill", "-s", "KILL", id)
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, err := e.ctr("tasks", "delete", id); err == nil {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("the task of %s did not end after SIGKILL", id)
		}
	}
	e.must("containers", "delete", id)

	start = time.Now()
	e.must("containers", "restore", "--live", id, "ctcrt/checkpoint:1")
	t.Logf("ctr containers restore --live through ctcr: %v", time.Since(start))
	// The checkpoint leaves the root's writable layer behind (no --rw):
	// /data/count is back once the restored loop writes it again.
	e.waitCount(id, countAt, 5*time.Second)
	got, err := e.count(id, "count")
	if err != nil || got < countAt {
		t.Errorf("/data/count is %d (%v) after restore, below %d read before the checkpoint", got, err, countAt)
	}
	e.waitCount(id, got+2, 5*time.Second)
	if sub, err := e.count(id, "sub"); err != nil || sub < subAt {
		t.Errorf("/data/sub is %d (%v) after restore, below %d", sub, err, subAt)
	}
}
