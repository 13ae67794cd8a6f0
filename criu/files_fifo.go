package criu

import (
	"fmt"
	"os"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fifo"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu/images"
)

// fifos are named pipes, reopened by path. As in CRIU (criu/fifo.c) a
// FIFO entry in files.img names the pipe inode and a reg-file entry with
// the path and flags (regf_id); fifo-data.img holds the buffered data in
// the layout of pipes-data.img.
//
// Restore opens the FIFO once read-write and keeps it open until the
// tasks have theirs: that holds the pipe (and the data written back)
// alive and lets every other open, reader or writer, succeed at once.
var fifos = fileKind{
	name:   "fifo",
	fdType: fdinfo.FdTypes_FIFO,
	dump:   dumpFifo,
	open:   openFifo,
}

func dumpFifo(d *fdDump) (*fdinfo.FileEntry, error) {
	if d.st.Mode&unix.S_IFMT != unix.S_IFIFO || !strings.HasPrefix(d.link, "/") {
		return nil, nil
	}
	ino := uint32(d.st.Ino)
	if err := dumpPipeData(d, images.FifoData, ino); err != nil {
		return nil, err
	}
	var regID uint32
	if path, ok := strings.CutSuffix(d.link, " (deleted)"); ok {
		// Unlinked: its path entry is remapped to a ghost that restore
		// makes again with mkfifo in the tree's root
		// (files_ghostkinds.go).
		regID = d.files.addIn(path, d.flags, 0, &d.st, noMount)
		remapToGhost(d.files, regID, ghostKindID(d.files, path, &d.st, ""))
	} else {
		mntID, err := d.files.viewMount(d.procFile().path, d.link, &d.st, false)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d.where, err)
		}
		regID = d.files.addIn(d.link, d.flags, 0, &d.st, mntID)
	}
	id := d.files.nextID()
	return &fdinfo.FileEntry{Id: proto.Uint32(id), Fifo: &fifo.FifoEntry{
		Id: proto.Uint32(id), PipeId: proto.Uint32(ino), RegfId: proto.Uint32(regID),
	}}, nil
}

func openFifo(r *fileRestore, e *fdinfo.FileEntry) (*os.File, error) {
	fe := e.GetFifo()
	if fe == nil {
		return nil, corruptf("files.img", "FIFO id %d without its entry", e.GetId())
	}
	regE := r.cp.files[fe.GetRegfId()]
	reg := regE.GetReg()
	if reg == nil {
		return nil, corruptf("files.img", "FIFO id %d: no reg-file entry %d for its path", e.GetId(), fe.GetRegfId())
	}
	path := reg.GetName()
	holders, _ := r.state["fifo"].(map[uint32]*os.File)
	if holders == nil {
		holders = map[uint32]*os.File{}
		r.state["fifo"] = holders
	}
	id := fe.GetPipeId()
	if holders[id] == nil {
		// Inside the tree's root, through no symlink: the data written
		// back must not land in a FIFO of the host; in the view of the
		// nested mount namespace it was of, if one's (files_mntview.go).
		// An unlinked FIFO is made again, held, and unlinked
		// (files_ghostkinds.go).
		h, err := ghostFifoHolder(r, fe.GetRegfId())
		if err != nil {
			return nil, err
		}
		if h != nil {
			// r.hold has it already; a second description, closed
			// with the others.
			if h, err = os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", h.Fd()), unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0); err != nil {
				return nil, fmt.Errorf("unlinked FIFO %s: %w", path, err)
			}
		} else {
			view, err := r.viewPid(reg, r.rootPid)
			if err != nil {
				return nil, fmt.Errorf("FIFO: %w", err)
			}
			if h, err = openInTree(view, path, unix.O_RDWR|unix.O_NONBLOCK); err != nil {
				return nil, fmt.Errorf("FIFO %w", err)
			}
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(h.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
			h.Close()
			return nil, fmt.Errorf("FIFO %s is no longer a FIFO", path)
		}
		r.hold(h)
		holders[id] = h
		de, data, err := pipeData(r, images.FifoData, id)
		if err != nil {
			return nil, fmt.Errorf("FIFO %s: %w", path, err)
		}
		if n, err := unix.IoctlGetInt(int(h.Fd()), unix.TIOCINQ); err == nil && n > 0 {
			return nil, fmt.Errorf("FIFO %s already holds %d bytes that are not the checkpoint's", path, n)
		}
		if err := fillPipe(h, de, data); err != nil {
			return nil, fmt.Errorf("FIFO %s: %w", path, err)
		}
	}
	flags := reg.GetFlags()
	// Reopened through the holder, not by name: the same pipe, whatever
	// the name leads to now.
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", holders[id].Fd()), int(flags&unix.O_ACCMODE)|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("FIFO %s: %w", path, err)
	}
	status := int(flags) & (unix.O_NONBLOCK | unix.O_DIRECT | unix.O_ASYNC | unix.O_NOATIME | unix.O_APPEND)
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, status); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("FIFO %s: set flags %#x: %w", path, status, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}
