package criu

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"golang.org/x/sys/unix"
)

// Summary describes a checkpoint for people and scripts (ctcr show).
type Summary struct {
	Dir        string        `json:"dir"`
	Namespaces []string      `json:"namespaces"` // those the tree had of its own
	Tasks      []TaskSummary `json:"tasks"`
	PagesBytes uint64        `json:"pages_bytes"`
	// Vdso says how the checkpoint's vDSO meets this kernel's: "same",
	// "proxy" (restored behind jumps into this kernel's), "refused: WHY",
	// or "" when the checkpoint did not record it.
	Vdso string `json:"vdso"`
	// Compression is that of the page images: "zstd", or "none".
	Compression string `json:"compression"`
	// Warnings say what could not be checked (no manifest).
	Warnings []string `json:"warnings,omitempty"`
}

// TaskSummary is one process of a checkpoint.
type TaskSummary struct {
	Pid        int         `json:"pid"`
	Ppid       int         `json:"ppid"`
	Pgid       int         `json:"pgid"`
	Sid        int         `json:"sid"`
	Comm       string      `json:"comm"`
	State      string      `json:"state"` // alive, zombie
	Threads    []int       `json:"threads"`
	Mappings   int         `json:"mappings"`
	PagesBytes uint64      `json:"pages_bytes"`
	Fds        []FdSummary `json:"fds,omitempty"`
}

// FdSummary is one fd of a task.
type FdSummary struct {
	Fd   int    `json:"fd"`
	Type string `json:"type"`
	Name string `json:"name,omitempty"`
}

// Inspect reads and checks the checkpoint in dir and summarizes it.
func Inspect(dir string) (*Summary, error) {
	cp, err := loadCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	s := &Summary{Dir: dir, Warnings: cp.warnings, Compression: cp.compression}
	if s.Compression == CompressNone {
		s.Compression = "none"
	}
	flags := ownNamespaces(cp.tasks[0].core.GetIds())
	for _, k := range nsKinds {
		if flags&k.flag != 0 {
			s.Namespaces = append(s.Namespaces, k.name)
		}
	}
	for _, t := range cp.tasks {
		ps := t.pstree
		ts := TaskSummary{Pid: int(ps.GetPid()), Ppid: int(ps.GetPpid()), Pgid: int(ps.GetPgid()), Sid: int(ps.GetSid()),
			Comm: t.core.GetTc().GetComm(), State: "alive"}
		for _, id := range ps.Threads {
			ts.Threads = append(ts.Threads, int(id))
		}
		if t.zombie {
			ws := unix.WaitStatus(t.core.GetTc().GetExitCode())
			ts.State = fmt.Sprintf("zombie (exit status %d)", ws.ExitStatus())
			if ws.Signaled() {
				ts.State = fmt.Sprintf("zombie (killed by %v)", ws.Signal())
			}
		} else {
			ts.Mappings = len(t.mm.Vmas)
			ts.PagesBytes = t.pagesSize + t.parentSize
			s.PagesBytes += ts.PagesBytes
			for _, fd := range t.fds {
				fe := cp.files[fd.GetId()]
				ts.Fds = append(ts.Fds, FdSummary{Fd: int(fd.GetFd()), Type: fe.GetType().String(), Name: fileName(fe)})
			}
		}
		s.Tasks = append(s.Tasks, ts)
	}
	s.Vdso = vdsoVerdict(dir)
	return s, nil
}

// vdsoVerdict says how the vDSO of the checkpoint in dir meets this
// kernel's (Summary.Vdso).
func vdsoVerdict(dir string) string {
	if _, err := os.Stat(filepath.Join(dir, vdsoFile)); err != nil {
		return ""
	}
	p, err := checkVdso(dir, false)
	switch {
	case err != nil:
		return "refused: " + err.Error()
	case p != nil:
		return "proxy"
	}
	return "same"
}

// fileName says what a file entry is, for people: a path, a socket's
// addresses, a pipe's id.
func fileName(fe *fdinfo.FileEntry) string {
	switch fe.GetType() {
	case fdinfo.FdTypes_REG:
		return fe.GetReg().GetName()
	case fdinfo.FdTypes_UNIXSK:
		return unixName(fe.GetUsk().GetName())
	case fdinfo.FdTypes_INETSK:
		i := fe.GetIsk()
		src, err1 := inetSockaddr(i.GetFamily(), i.GetSrcAddr(), i.GetSrcPort())
		if err1 != nil {
			return ""
		}
		var dst unix.Sockaddr
		if i.GetDstPort() != 0 {
			dst, _ = inetSockaddr(i.GetFamily(), i.GetDstAddr(), i.GetDstPort())
		}
		desc := inetDesc(i.GetType(), i.GetFamily(), i.GetProto(), src, dst)
		if i.GetType() == unix.SOCK_STREAM && i.GetState() == tcpListen {
			desc += " listening"
		}
		return desc
	case fdinfo.FdTypes_PIPE:
		return fmt.Sprintf("pipe:[%d]", fe.GetPipe().GetPipeId())
	case fdinfo.FdTypes_NETLINKSK:
		return fmt.Sprintf("netlink protocol %d port %d", fe.GetNlsk().GetProtocol(), fe.GetNlsk().GetPortid())
	}
	return ""
}
