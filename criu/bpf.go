package criu

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/proc"
)

// bpfObjects refuses fds on BPF programs and maps by name. They are not
// kept: a program would have to be loaded again from its translated
// instructions with its maps' references rewritten, its maps refilled,
// and each program attached again where it was attached (systemd
// attaches IPAddressDeny=/IPAddressAllow= firewalls to the cgroups of
// the units that have them, and keeps the program fds to detach them).
// The refusal names the program, its type and the cgroups it is
// attached to, which for systemd names the unit.
var bpfObjects = fileKind{
	name:   "bpf",
	fdType: fdinfo.FdTypes_BPFMAP,
	dump:   dumpBPF,
	open: func(_ *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
		return nil, fmt.Errorf("file id %d: BPF maps are not restored: %w", e.GetId(), ErrUnsupported)
	},
}

// bpfProgTypes names the program types (enum bpf_prog_type of
// include/uapi/linux/bpf.h) a refusal is likely to meet.
var bpfProgTypes = map[uint32]string{
	unix.BPF_PROG_TYPE_SOCKET_FILTER:           "socket_filter",
	unix.BPF_PROG_TYPE_CGROUP_SKB:              "cgroup_skb",
	unix.BPF_PROG_TYPE_CGROUP_SOCK:             "cgroup_sock",
	unix.BPF_PROG_TYPE_CGROUP_DEVICE:           "cgroup_device",
	unix.BPF_PROG_TYPE_CGROUP_SOCK_ADDR:        "cgroup_sock_addr",
	unix.BPF_PROG_TYPE_CGROUP_SYSCTL:           "cgroup_sysctl",
	unix.BPF_PROG_TYPE_CGROUP_SOCKOPT:          "cgroup_sockopt",
	unix.BPF_PROG_TYPE_LSM:                     "lsm",
	unix.BPF_PROG_TYPE_TRACING:                 "tracing",
	unix.BPF_PROG_TYPE_KPROBE:                  "kprobe",
	unix.BPF_PROG_TYPE_XDP:                     "xdp",
	unix.BPF_PROG_TYPE_SCHED_CLS:               "sched_cls",
	unix.BPF_PROG_TYPE_SOCK_OPS:                "sock_ops",
	unix.BPF_PROG_TYPE_TRACEPOINT:              "tracepoint",
	unix.BPF_PROG_TYPE_RAW_TRACEPOINT:          "raw_tracepoint",
	unix.BPF_PROG_TYPE_STRUCT_OPS:              "struct_ops",
	unix.BPF_PROG_TYPE_SK_LOOKUP:               "sk_lookup",
	unix.BPF_PROG_TYPE_FLOW_DISSECTOR:          "flow_dissector",
	unix.BPF_PROG_TYPE_PERF_EVENT:              "perf_event",
	unix.BPF_PROG_TYPE_SCHED_ACT:               "sched_act",
	unix.BPF_PROG_TYPE_SK_SKB:                  "sk_skb",
	unix.BPF_PROG_TYPE_SK_MSG:                  "sk_msg",
	unix.BPF_PROG_TYPE_LWT_IN:                  "lwt_in",
	unix.BPF_PROG_TYPE_SK_REUSEPORT:            "sk_reuseport",
	unix.BPF_PROG_TYPE_EXT:                     "ext",
	unix.BPF_PROG_TYPE_SYSCALL:                 "syscall",
	unix.BPF_PROG_TYPE_RAW_TRACEPOINT_WRITABLE: "raw_tracepoint_writable",
}

// bpfCgroupAttachTypes are the cgroup attach points (enum
// bpf_attach_type) a program may hang on, with their names.
var bpfCgroupAttachTypes = []struct {
	typ  uint32
	name string
}{
	{unix.BPF_CGROUP_INET_INGRESS, "ingress"},
	{unix.BPF_CGROUP_INET_EGRESS, "egress"},
	{unix.BPF_CGROUP_INET_SOCK_CREATE, "sock_create"},
	{unix.BPF_CGROUP_INET_SOCK_RELEASE, "sock_release"},
	{unix.BPF_CGROUP_SOCK_OPS, "sock_ops"},
	{unix.BPF_CGROUP_DEVICE, "device"},
	{unix.BPF_CGROUP_INET4_BIND, "bind4"},
	{unix.BPF_CGROUP_INET6_BIND, "bind6"},
	{unix.BPF_CGROUP_INET4_CONNECT, "connect4"},
	{unix.BPF_CGROUP_INET6_CONNECT, "connect6"},
	{unix.BPF_CGROUP_INET4_POST_BIND, "post_bind4"},
	{unix.BPF_CGROUP_INET6_POST_BIND, "post_bind6"},
	{unix.BPF_CGROUP_UDP4_SENDMSG, "sendmsg4"},
	{unix.BPF_CGROUP_UDP6_SENDMSG, "sendmsg6"},
	{unix.BPF_CGROUP_UDP4_RECVMSG, "recvmsg4"},
	{unix.BPF_CGROUP_UDP6_RECVMSG, "recvmsg6"},
	{unix.BPF_CGROUP_SYSCTL, "sysctl"},
	{unix.BPF_CGROUP_GETSOCKOPT, "getsockopt"},
	{unix.BPF_CGROUP_SETSOCKOPT, "setsockopt"},
}

func dumpBPF(d *fdDump) (*fdinfo.FileEntry, error) {
	prog, isMap := isAnon(d, "bpf-prog"), isAnon(d, "bpf-map")
	if !prog && !isMap {
		return nil, nil
	}
	f, err := d.file()
	if err != nil {
		return nil, err
	}
	if isMap {
		info, err := kernel.BPFMapInfoByFd(int(f.Fd()))
		if err != nil {
			return nil, d.unsupported(fmt.Sprintf("BPF map (%v): BPF maps are not kept", err))
		}
		return nil, d.unsupported(fmt.Sprintf("BPF map %d %q (type %d, %d entries): BPF maps are not kept", info.ID, cString(info.Name[:]), info.Type, info.MaxEntries))
	}
	info, err := kernel.BPFProgInfoByFd(int(f.Fd()))
	if err != nil {
		return nil, d.unsupported(fmt.Sprintf("BPF program (%v): BPF programs are not kept", err))
	}
	typ, ok := bpfProgTypes[info.Type]
	if !ok {
		typ = fmt.Sprintf("type %d", info.Type)
	}
	where := ""
	if at := bpfCgroupAttachments(info.ID); len(at) > 0 {
		where = fmt.Sprintf(", attached to cgroup %s", at[0])
		if len(at) > 1 {
			where += fmt.Sprintf(" and %d more", len(at)-1)
		}
	}
	return nil, d.unsupported(fmt.Sprintf("BPF program %d %q (%s%s): BPF programs are not kept", info.ID, cString(info.Name[:]), typ, where))
}

// cString is the NUL-terminated string at the start of b.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// errEnoughCgroups stops the walk of bpfCgroupAttachments.
var errEnoughCgroups = errors.New("enough cgroups")

// bpfCgroupAttachments lists where in the cgroup v2 hierarchy program id
// is attached ("/lxc.payload.ct/system.slice/systemd-journald.service
// (ingress)"), for a refusal's message: it looks at most at 10,000
// cgroups and gives up quietly on any error, as the refusal stands
// without it.
func bpfCgroupAttachments(id uint32) []string {
	ms, err := proc.ReadMountinfo(os.Getpid())
	if err != nil {
		return nil
	}
	top := ""
	for _, m := range ms {
		if m.FSType == "cgroup2" && m.Root == "/" {
			top = m.MountPoint
			break
		}
	}
	if top == "" {
		return nil
	}
	var out []string
	seen := 0
	filepath.WalkDir(top, func(p string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return nil
		}
		if seen++; seen > 10000 {
			return errEnoughCgroups
		}
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil
		}
		defer unix.Close(fd)
		for _, at := range bpfCgroupAttachTypes {
			ids, err := kernel.BPFProgQuery(fd, at.typ)
			if err != nil {
				continue
			}
			for _, got := range ids {
				if got == id {
					out = append(out, fmt.Sprintf("%s (%s)", "/"+strings.TrimPrefix(strings.TrimPrefix(p, top), "/"), at.name))
				}
			}
		}
		return nil
	})
	return out
}
