package criurpc

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The options ctcr acts on (or that change nothing for it), by request.
// Any other option a request sets to something else than its default
// is refused by name: a runtime that asks for a page server, lazy pages
// or a joined namespace must not get a checkpoint without them.
var (
	commonOpts = []string{
		"images_dir_fd", "images_dir", "work_dir_fd", "log_level", "log_file", "log_to_stderr",
		"notify_scripts", "pid", "root", "shell_job", "file_locks", "ext_unix_sk", "tcp_established",
		"tcp_close", "tcp_skip_in_flight", "manage_cgroups", "manage_cgroups_mode", "orphan_pts_master",
		"empty_ns", "external", "ext_mnt", "config_file", "display_stats", "timeout",
		// ghost_limit is mapped (dump.go); the rest are CRIU's defaults
		// and tunables of its own implementation.
		"ghost_limit", "cpu_cap", "pre_dump_mode", "network_lock", "auto_ext_mnt", "ext_sharing", "ext_masters",
		"force_irmap", "link_remap", "skip_file_rwx_check",
	}
	dumpOpts    = []string{"leave_running", "freeze_cgroup", "parent_img", "track_mem", "cgroup_dump_controller"}
	restoreOpts = []string{"rst_sibling", "inherit_fd", "cg_root", "evasive_devices", "cgroup_yard"}
)

// checkOpts refuses the options of o that ctcr does not implement.
func checkOpts(o *rpc.CriuOpts, restore bool) error {
	known := map[string]bool{}
	for _, n := range commonOpts {
		known[n] = true
	}
	more := dumpOpts
	if restore {
		more = restoreOpts
	}
	for _, n := range more {
		known[n] = true
	}
	var refused []string
	o.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := string(fd.Name())
		if known[name] || isDefault(fd, v) {
			return true
		}
		refused = append(refused, name)
		return true
	})
	if len(refused) > 0 {
		sort.Strings(refused)
		return fmt.Errorf("option %s is not supported by ctcr", strings.Join(refused, ", "))
	}
	if m := o.GetEmptyNs() &^ unix.CLONE_NEWNET; m != 0 {
		return fmt.Errorf("empty_ns %#x: only the network namespace (CLONE_NEWNET) can be left empty by ctcr", o.GetEmptyNs())
	}
	if o.GetPreDumpMode() != rpc.CriuPreDumpMode_SPLICE && o.PreDumpMode != nil && o.GetPreDumpMode() != rpc.CriuPreDumpMode_VM_READ {
		return fmt.Errorf("pre_dump_mode %v is not known", o.GetPreDumpMode())
	}
	if o.GetNetworkLock() == rpc.CriuNetworkLockMethod_SKIP && o.GetTcpEstablished() {
		return fmt.Errorf("network_lock SKIP with tcp_established: ctcr always holds the connections still (nftables)")
	}
	if c := o.GetConfigFile(); c != "" {
		// runc names /etc/criu/runc.conf, or a file from the
		// org.criu.config annotation. CRIU reads it if it exists;
		// ctcr reads no CRIU configuration, so one with settings in it
		// is refused rather than ignored.
		if b, err := os.ReadFile(c); err == nil && len(strings.TrimSpace(stripComments(string(b)))) > 0 {
			return fmt.Errorf("config_file %s holds CRIU settings, which ctcr does not read: give the options in the request", c)
		}
	}
	return nil
}

// isDefault says whether v is what an unset field reads as: false, zero,
// an empty string or list, or the field's declared default.
func isDefault(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
	switch {
	case fd.IsList():
		return v.List().Len() == 0
	case fd.IsMap():
		return v.Map().Len() == 0
	case fd.Kind() == protoreflect.MessageKind:
		return false
	}
	if fd.HasDefault() && v.Equal(fd.Default()) {
		return true
	}
	return v.Equal(fd.Default()) || v.Equal(protoreflect.ValueOf(zeroOf(fd.Kind())))
}

func zeroOf(k protoreflect.Kind) any {
	switch k {
	case protoreflect.BoolKind:
		return false
	case protoreflect.StringKind:
		return ""
	case protoreflect.BytesKind:
		return []byte(nil)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return int32(0)
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return int64(0)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return uint32(0)
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return uint64(0)
	case protoreflect.EnumKind:
		return protoreflect.EnumNumber(0)
	}
	return nil
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// externalNS is one `TYPE[INODE]:KEY` of the external option naming a
// namespace (runc: net[4026532xxx]:extRootNetNS).
type externalNS struct {
	kind string
	ino  uint64
	key  string
}

// parseExternal splits the external options into namespaces and refuses
// what ctcr cannot treat as external (files, devices, mounts by key).
func parseExternal(list []string) ([]externalNS, error) {
	var out []externalNS
	for _, e := range list {
		kind, rest, ok := strings.Cut(e, "[")
		inoS, key, ok2 := strings.Cut(rest, "]:")
		if !ok || !ok2 {
			return nil, fmt.Errorf("external %q: only TYPE[INODE]:KEY of a namespace is supported", e)
		}
		ino, err := strconv.ParseUint(inoS, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("external %q: inode %q: %w", e, inoS, err)
		}
		switch kind {
		case "net":
		default:
			return nil, fmt.Errorf("external %q: only an external network namespace is supported by ctcr", e)
		}
		out = append(out, externalNS{kind: kind, ino: ino, key: key})
	}
	return out, nil
}
