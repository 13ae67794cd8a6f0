package ns

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
)

func TestNotifyPid(t *testing.T) {
	for _, c := range []struct {
		name, status string
		want         int
	}{
		// As ipc/mqueue.c prints it (read from a queue file here).
		{"a queue without a registration reads NOTIFY_PID 0", "QSIZE:2          NOTIFY:0     SIGNO:0     NOTIFY_PID:0     \n", 0},
		{"a registered queue reads the registering process", "QSIZE:0          NOTIFY:0     SIGNO:12    NOTIFY_PID:4711  \n", 4711},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := notifyPid(c.status)
			if err != nil || got != c.want {
				t.Errorf("notifyPid(%q) = %d, %v; want %d", c.status, got, err, c.want)
			}
		})
	}
	if _, err := notifyPid("QSIZE:0"); err == nil {
		t.Errorf("notifyPid of a status without NOTIFY_PID gave no error")
	}
}

func TestReadMqImageRefusesWhatRestoreMustNotTrust(t *testing.T) {
	good := func() mqImage {
		return mqImage{Limits: mqLimits{256, 10, 8192, 10, 8192}, Queues: []mqQueue{{
			Name: "q", Mode: 0o640, Maxmsg: 2, Msgsize: 4,
			Messages: []mqMessage{{Priority: 3, Data: []byte("abcd")}},
		}}}
	}
	cases := []struct {
		name string
		edit func(*mqImage)
	}{
		{"a name with a slash", func(m *mqImage) { m.Queues[0].Name = "a/b" }},
		{"an empty name", func(m *mqImage) { m.Queues[0].Name = "" }},
		{"the name ..", func(m *mqImage) { m.Queues[0].Name = ".." }},
		{"a name longer than NAME_MAX", func(m *mqImage) { m.Queues[0].Name = strings.Repeat("n", 256) }},
		{"the same name twice", func(m *mqImage) { m.Queues = append(m.Queues, m.Queues[0]) }},
		{"mode bits beyond 07777", func(m *mqImage) { m.Queues[0].Mode = 0o100640 }},
		{"maxmsg 0", func(m *mqImage) { m.Queues[0].Maxmsg = 0 }},
		{"maxmsg above HARD_MSGMAX", func(m *mqImage) { m.Queues[0].Maxmsg = kernel.HARD_MSGMAX + 1 }},
		{"msgsize above HARD_MSGSIZEMAX", func(m *mqImage) { m.Queues[0].Msgsize = kernel.HARD_MSGSIZEMAX + 1 }},
		{"more messages than maxmsg", func(m *mqImage) {
			m.Queues[0].Messages = append(m.Queues[0].Messages, m.Queues[0].Messages[0], m.Queues[0].Messages[0])
		}},
		{"a message longer than msgsize", func(m *mqImage) { m.Queues[0].Messages[0].Data = []byte("abcde") }},
		{"a priority of MQ_PRIO_MAX", func(m *mqImage) { m.Queues[0].Messages[0].Priority = kernel.MQ_PRIO_MAX }},
	}
	write := func(t *testing.T, m mqImage) string {
		b, err := json.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), PosixMqFile)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("a well-formed image is read back as written", func(t *testing.T) {
		img, err := readMqImage(write(t, good()))
		if err != nil || len(img.Queues) != 1 || string(img.Queues[0].Messages[0].Data) != "abcd" || img.Limits.MsgMax != 10 {
			t.Fatalf("readMqImage = %+v, %v", img, err)
		}
	})
	for _, c := range cases {
		t.Run(c.name+" is refused as corrupt", func(t *testing.T) {
			m := good()
			c.edit(&m)
			if _, err := readMqImage(write(t, m)); !errors.Is(err, images.ErrCorrupt) {
				t.Errorf("readMqImage: %v, want ErrCorrupt", err)
			}
		})
	}
	t.Run("text that is not JSON is refused as corrupt", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), PosixMqFile)
		os.WriteFile(p, []byte(`{"queues": [`), 0o600)
		if _, err := readMqImage(p); !errors.Is(err, images.ErrCorrupt) {
			t.Errorf("readMqImage: %v, want ErrCorrupt", err)
		}
	})
}

// newIPCNamespace starts a sleep in a new IPC namespace.
func newIPCNamespace(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("/bin/sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

// queueState reads every message of queue name in pid's namespace and
// puts them back, as "prio:data" strings, with its attributes.
func queueState(t *testing.T, pid int, name string) (attr kernel.MqAttr, msgs []string, st unix.Stat_t) {
	t.Helper()
	err := inNamespace(pid, "ipc", unix.CLONE_NEWIPC, func() error {
		fd, err := kernel.MqOpen(name, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0, nil)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Fstat(fd, &st); err != nil {
			return err
		}
		q := &openQueue{fd: fd, q: mqQueue{Name: name}}
		got, err := drainAndRefill(q)
		for _, m := range got {
			msgs = append(msgs, string(rune('0'+m.Priority))+":"+string(m.Data))
		}
		if err != nil {
			return err
		}
		attr, err = kernel.MqGetattr(fd)
		return err
	})
	if err != nil {
		t.Fatalf("queue /%s of task %d: %v", name, pid, err)
	}
	return attr, msgs, st
}

// TestMqueuesRoundTrip: queues made in one IPC namespace are dumped
// (and left as they were) and recreated in another with their
// attributes, owner, mode, messages in order and the namespace limits.
func TestMqueuesRoundTrip(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: it creates IPC namespaces and joins them")
	}
	src := newIPCNamespace(t)
	err := inNamespace(src, "ipc", unix.CLONE_NEWIPC, func() error {
		if err := os.WriteFile(mqSysctlDir+"msg_max", []byte("20"), 0); err != nil {
			return err
		}
		fd, err := kernel.MqOpen("rt", unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o600, &kernel.MqAttr{Maxmsg: 15, Msgsize: 16})
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		for _, m := range []struct {
			d string
			p uint32
		}{{"one", 1}, {"two", 5}, {"three", 1}, {"", 2}} {
			if err := kernel.MqSend(fd, []byte(m.d), m.p); err != nil {
				return err
			}
		}
		if err := unix.Fchown(fd, 123, 456); err != nil {
			return err
		}
		return unix.Fchmod(fd, 0o620)
	})
	if err != nil {
		t.Fatalf("make a queue in task %d's namespace: %v", src, err)
	}
	stage, err := images.NewStaging(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer stage.Abort()
	if err := DumpMqueues(src, stage); err != nil {
		t.Fatalf("DumpMqueues: %v", err)
	}
	dir := stage.Dir // images as a dump leaves them, before inventory.img
	want := []string{"5:two", "2:", "1:one", "1:three"}
	check := func(t *testing.T, pid int) {
		attr, msgs, st := queueState(t, pid, "rt")
		if attr.Maxmsg != 15 || attr.Msgsize != 16 || attr.Curmsgs != 4 {
			t.Errorf("attributes %+v, want maxmsg 15, msgsize 16, 4 messages", attr)
		}
		if strings.Join(msgs, ",") != strings.Join(want, ",") {
			t.Errorf("messages %q, want %q", msgs, want)
		}
		if st.Mode&0o7777 != 0o620 || st.Uid != 123 || st.Gid != 456 {
			t.Errorf("mode %#o owner %d:%d, want 0620 123:456", st.Mode&0o7777, st.Uid, st.Gid)
		}
	}
	t.Run("the dumped namespace keeps its queue as it was", func(t *testing.T) { check(t, src) })
	t.Run("the restored namespace has the queue and the limits", func(t *testing.T) {
		dst := newIPCNamespace(t)
		if err := RestoreMqueues(dst, dir); err != nil {
			t.Fatalf("RestoreMqueues: %v", err)
		}
		check(t, dst)
		var l mqLimits
		if err := inNamespace(dst, "ipc", unix.CLONE_NEWIPC, func() (err error) { l, err = readMqLimits(); return }); err != nil {
			t.Fatal(err)
		}
		if l.MsgMax != 20 {
			t.Errorf("msg_max in the restored namespace is %d, want 20", l.MsgMax)
		}
	})
	t.Run("a queue with an mq_notify registration is refused by name", func(t *testing.T) {
		ns := newIPCNamespace(t)
		err := inNamespace(ns, "ipc", unix.CLONE_NEWIPC, func() error {
			fd, err := kernel.MqOpen("notified", unix.O_CREAT|unix.O_RDWR|unix.O_CLOEXEC, 0o600, nil)
			if err != nil {
				return err
			}
			// struct sigevent with SIGEV_NONE: a registration that
			// sends nothing, held by this process while fd is open.
			var ev [64]byte
			ev[12] = 1 // sigev_notify = SIGEV_NONE
			if err := mqNotify(fd, ev[:]); err != nil {
				return err
			}
			stage, err := images.NewStaging(t.TempDir())
			if err != nil {
				return err
			}
			defer stage.Abort()
			derr := DumpMqueues(ns, stage)
			unix.Close(fd)
			if !errors.Is(derr, ErrMqNotify) || !strings.Contains(derr.Error(), "/notified") {
				t.Errorf("DumpMqueues: %v, want ErrMqNotify naming /notified", derr)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

func mqNotify(fd int, sigevent []byte) error {
	if _, _, e := unix.Syscall(unix.SYS_MQ_NOTIFY, uintptr(fd), uintptr(unsafe.Pointer(&sigevent[0])), 0); e != 0 {
		return e
	}
	return nil
}

// FuzzReadMqImage: any posix-mq.json is read or refused, never panics,
// and what is read holds to the limits restore trusts.
func FuzzReadMqImage(f *testing.F) {
	f.Add([]byte(`{"limits":{"queues_max":256,"msg_max":10,"msgsize_max":8192,"msg_default":10,"msgsize_default":8192},` +
		`"queues":[{"name":"q","mode":416,"uid":0,"gid":0,"maxmsg":2,"msgsize":4,"messages":[{"priority":3,"data":"YWJjZA=="}]}]}`))
	f.Add([]byte(`{"queues":[{"name":"../x"}]}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), PosixMqFile)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		img, err := readMqImage(p)
		if err != nil {
			return
		}
		for _, q := range img.Queues {
			if q.Name == "" || strings.ContainsAny(q.Name, "/\x00") || q.Maxmsg == 0 || int64(len(q.Messages)) > q.Maxmsg {
				t.Errorf("read a queue restore must not trust: %+v", q)
			}
		}
	})
}
