package criu

import (
	"fmt"
	"os"

	criucore "github.com/checkpoint-restore/go-criu/v7/crit/images/criu-core"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// Namespace ids in images: 1 is the namespace ctcr itself runs in (the
// host's, left as it is), 2 is the dumped tree's own, which restore
// creates anew. Every task of a tree shares the root's namespaces.
const (
	nsHost = 1
	nsOwn  = 2
)

// nsKinds are the namespaces ctcr knows, with their clone flag.
var nsKinds = []struct {
	name string
	flag uint64
}{
	{"pid", unix.CLONE_NEWPID}, {"net", unix.CLONE_NEWNET}, {"ipc", unix.CLONE_NEWIPC},
	{"uts", unix.CLONE_NEWUTS}, {"mnt", unix.CLONE_NEWNS}, {"cgroup", unix.CLONE_NEWCGROUP},
	{"user", unix.CLONE_NEWUSER}, {"time", unix.CLONE_NEWTIME},
}

// nsSet records, per kind, whether the tree has its own namespace.
type nsSet map[string]uint32

// namespaceIDs compares pid's namespaces with ctcr's.
func namespaceIDs(pid int) (nsSet, error) {
	out := nsSet{}
	for _, k := range nsKinds {
		var mine, theirs unix.Stat_t
		if err := unix.Stat("/proc/self/ns/"+k.name, &mine); err != nil {
			if os.IsNotExist(err) {
				continue
			}
			return nil, err
		}
		if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/%s", pid, k.name), &theirs); err != nil {
			return nil, fmt.Errorf("task %d: %s namespace: %w", pid, k.name, err)
		}
		if mine.Ino == theirs.Ino && mine.Dev == theirs.Dev {
			out[k.name] = nsHost
		} else {
			out[k.name] = nsOwn
		}
	}
	return out, nil
}

func (s nsSet) fill(ids *criucore.TaskKobjIdsEntry) {
	set := func(name string, f **uint32) {
		if v, ok := s[name]; ok {
			*f = proto.Uint32(v)
		}
	}
	set("pid", &ids.PidNsId)
	set("net", &ids.NetNsId)
	set("ipc", &ids.IpcNsId)
	set("uts", &ids.UtsNsId)
	set("mnt", &ids.MntNsId)
	set("cgroup", &ids.CgroupNsId)
	set("user", &ids.UserNsId)
	set("time", &ids.TimeNsId)
}

// ownNamespaces returns the CLONE_NEW* flags of the namespaces the image
// says the tree had of its own.
func ownNamespaces(ids *criucore.TaskKobjIdsEntry) uint64 {
	var flags uint64
	if ids.GetPidNsId() == nsOwn {
		flags |= unix.CLONE_NEWPID
	}
	if ids.GetNetNsId() == nsOwn {
		flags |= unix.CLONE_NEWNET
	}
	if ids.GetIpcNsId() == nsOwn {
		flags |= unix.CLONE_NEWIPC
	}
	if ids.GetUtsNsId() == nsOwn {
		flags |= unix.CLONE_NEWUTS
	}
	if ids.GetMntNsId() == nsOwn {
		flags |= unix.CLONE_NEWNS
	}
	if ids.GetCgroupNsId() == nsOwn {
		flags |= unix.CLONE_NEWCGROUP
	}
	if ids.GetUserNsId() == nsOwn {
		flags |= unix.CLONE_NEWUSER
	}
	if ids.GetTimeNsId() == nsOwn {
		flags |= unix.CLONE_NEWTIME
	}
	return flags
}

// ImageNamespaces returns the CLONE_NEW* flags of the namespaces the
// checkpoint in dir had of its own.
func ImageNamespaces(dir string) (uint64, error) {
	cp, err := loadCheckpoint(dir)
	if err != nil {
		return 0, err
	}
	return ownNamespaces(cp.tasks[0].core.GetIds()), nil
}
