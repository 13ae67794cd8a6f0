package criurpc

import (
	"strings"
	"testing"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

func TestCheckOpts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    *rpc.CriuOpts
		restore bool
		refuse  string // "" if accepted
	}{
		{"runc's dump options are accepted", &rpc.CriuOpts{
			ImagesDirFd: proto.Int32(5), LogLevel: proto.Int32(4), LogFile: proto.String("dump.log"), Root: proto.String("/r"),
			ManageCgroups: proto.Bool(true), NotifyScripts: proto.Bool(true), Pid: proto.Int32(7), ShellJob: proto.Bool(false),
			LeaveRunning: proto.Bool(false), TcpEstablished: proto.Bool(true), ExtUnixSk: proto.Bool(false), FileLocks: proto.Bool(false),
			EmptyNs: proto.Uint32(0), OrphanPtsMaster: proto.Bool(true), AutoDedup: proto.Bool(false), LazyPages: proto.Bool(false),
			FreezeCgroup: proto.String("/sys/fs/cgroup/freezer/x"), External: []string{"net[4026531840]:extRootNetNS"},
			ExtMnt: []*rpc.ExtMountMap{{Key: proto.String("/etc/hosts"), Val: proto.String("/etc/hosts")}},
		}, false, ""},
		{"runc's restore options are accepted", &rpc.CriuOpts{
			ImagesDirFd: proto.Int32(5), EvasiveDevices: proto.Bool(true), RstSibling: proto.Bool(true),
			InheritFd: []*rpc.InheritFd{{Key: proto.String("pipe:[1]"), Fd: proto.Int32(1)}},
			CgRoot:    []*rpc.CgroupRoot{{Ctrl: proto.String("cpu"), Path: proto.String("/x")}},
		}, true, ""},
		{"a page server is refused by name", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), Ps: &rpc.CriuPageServerInfo{Port: proto.Int32(1)}}, false, "option ps"},
		{"lazy pages are refused", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), LazyPages: proto.Bool(true)}, false, "option lazy_pages"},
		{"joining namespaces at restore is refused", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), JoinNs: []*rpc.JoinNamespace{{Ns: proto.String("ipc"), NsFile: proto.String("/x")}}}, true, "option join_ns"},
		{"rst_sibling on a dump is refused", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), RstSibling: proto.Bool(true)}, false, "option rst_sibling"},
		{"leave_running on a restore is refused", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), LeaveRunning: proto.Bool(true)}, true, "option leave_running"},
		{"an empty mount namespace is refused", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), EmptyNs: proto.Uint32(unix.CLONE_NEWNET | unix.CLONE_NEWNS)}, false, "empty_ns"},
		{"an empty network namespace is accepted", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), EmptyNs: proto.Uint32(unix.CLONE_NEWNET)}, false, ""},
		{"CRIU's defaults said aloud are accepted", &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1), GhostLimit: proto.Uint32(0x100000), CpuCap: proto.Uint32(0xffffffff), PreDumpMode: rpc.CriuPreDumpMode_SPLICE.Enum()}, false, ""},
		{"a non-default ghost limit is accepted (dump.go maps it)", &rpc.CriuOpts{ImagesDirFd: proto.Int32(5), GhostLimit: proto.Uint32(1)}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkOpts(tc.opts, tc.restore)
			switch {
			case tc.refuse == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.refuse != "" && (err == nil || !strings.Contains(err.Error(), tc.refuse)):
				t.Errorf("got %v, want a refusal naming %q", err, tc.refuse)
			}
		})
	}
}

func TestParseExternal(t *testing.T) {
	got, err := parseExternal([]string{"net[4026532001]:extRootNetNS"})
	if err != nil || len(got) != 1 || got[0] != (externalNS{kind: "net", ino: 4026532001, key: "extRootNetNS"}) {
		t.Fatalf("parseExternal: %v, %v", got, err)
	}
	for _, bad := range []string{"pid[1]:extRootPidNS", "file[3:4]", "net[x]:k", "mnt[/a]:b", "dev[1/2]:d"} {
		if _, err := parseExternal([]string{bad}); err == nil {
			t.Errorf("parseExternal(%q) accepted it", bad)
		}
	}
}
