package criu

import (
	"fmt"
	"os"
	"unsafe"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/fdinfo"
	"github.com/checkpoint-restore/go-criu/v7/crit/images/fown"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
)

// The SIGIO owner of an open file description (F_SETOWN_EX) and the
// signal it sends (F_SETSIG) live in the file, not in any task: O_ASYNC
// and a socket's SIGURG need them. CRIU keeps them in the fown field of
// each kind's entry, with the owner's type (F_OWNER_TID, _PID, _PGRP)
// and id in the tree's PID namespace; so does ctcr.
//
// The owner's uid and euid, which the kernel took from whoever set it,
// are not kept: ctcr sets the owner as root, whose signals the owner
// always receives.

// Owner types of struct f_owner_ex.
const (
	fOwnerTid  = 0
	fOwnerPid  = 1
	fOwnerPgrp = 2
)

// fOwnerEx is struct f_owner_ex.
type fOwnerEx struct {
	Type int32
	Pid  int32
}

// fcntlPtr runs fcntl(f, cmd, arg) with a pointer argument.
func fcntlPtr(f *os.File, cmd int, arg unsafe.Pointer) error {
	_, err := fcntlRaw(f, cmd, uintptr(arg))
	return err
}

// fcntlRaw runs fcntl(f, cmd, arg) without f.Fd() (kernel.FileSyscall).
func fcntlRaw(f *os.File, cmd int, arg uintptr) (int, error) {
	r, err := kernel.FileSyscall(f, unix.SYS_FCNTL, uintptr(cmd), arg)
	return int(r), err
}

// dumpFown records in e the SIGIO owner and signal of the open file
// description d has, if it has either. An owner outside the tree is
// refused, naming it.
func dumpFown(d *fdDump, e *fdinfo.FileEntry) error {
	if d.flags&unix.O_PATH != 0 {
		// An O_PATH file has no owner to read: fcntl refuses every
		// command but F_DUPFD*, F_GETFD, F_SETFD and F_GETFL on it with
		// EBADF (fs/fcntl.c check_fcntl_cmd), and nothing can signal
		// through it.
		return nil
	}
	f, err := d.file()
	if err != nil {
		return err
	}
	var ex fOwnerEx
	if err := fcntlPtr(f, unix.F_GETOWN_EX, unsafe.Pointer(&ex)); err != nil {
		return fmt.Errorf("%s (%s): F_GETOWN_EX: %w", d.where, d.link, err)
	}
	sig, err := fcntlRaw(f, unix.F_GETSIG, 0)
	if err != nil {
		return fmt.Errorf("%s (%s): F_GETSIG: %w", d.where, d.link, err)
	}
	if ex.Pid == 0 && sig == 0 {
		return nil
	}
	var id int
	if ex.Pid != 0 {
		var ok bool
		what := map[int32]string{fOwnerTid: "thread", fOwnerPid: "process", fOwnerPgrp: "process group"}[ex.Type]
		switch ex.Type {
		case fOwnerTid:
			id, ok = d.files.vtidOf[int(ex.Pid)]
		case fOwnerPid:
			id, ok = d.files.vpidOf[int(ex.Pid)]
		case fOwnerPgrp:
			id, ok = d.files.vpgidOf[int(ex.Pid)]
		}
		if !ok {
			return fmt.Errorf("%s (%s): its SIGIO owner, %s %d, is outside the tree: %w", d.where, d.link, what, ex.Pid, ErrUnsupported)
		}
	}
	fo := &fown.FownEntry{Uid: proto.Uint32(0), Euid: proto.Uint32(0), Signum: proto.Uint32(uint32(sig)), PidType: proto.Uint32(uint32(ex.Type)), Pid: proto.Uint32(uint32(id))}
	if !setFownField(e, fo) {
		return fmt.Errorf("%s (%s) has a SIGIO owner or signal, which its image cannot hold: %w", d.where, d.link, ErrUnsupported)
	}
	return nil
}

// fownField returns the kind's message in e that has a fown field, and
// that field.
func fownField(e *fdinfo.FileEntry) (protoreflect.Message, protoreflect.FieldDescriptor) {
	var msg protoreflect.Message
	var field protoreflect.FieldDescriptor
	e.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsList() || fd.IsMap() {
			return true
		}
		if ff := fd.Message().Fields().ByName("fown"); ff != nil {
			msg, field = v.Message(), ff
			return false
		}
		return true
	})
	return msg, field
}

// setFownField puts fo in e's fown field; false if e's kind has none.
func setFownField(e *fdinfo.FileEntry, fo *fown.FownEntry) bool {
	msg, field := fownField(e)
	if msg == nil {
		return false
	}
	msg.Set(field, protoreflect.ValueOfMessage(fo.ProtoReflect()))
	return true
}

// fownOf returns the fown of e, or nil.
func fownOf(e *fdinfo.FileEntry) *fown.FownEntry {
	msg, field := fownField(e)
	if msg == nil || !msg.Has(field) {
		return nil
	}
	fo, _ := msg.Get(field).Message().Interface().(*fown.FownEntry)
	return fo
}

// setFown gives the restored file id (f) its SIGIO owner and signal,
// once every task of the tree exists.
func (r *fileRestore) setFown(id uint32, f *os.File, fo *fown.FownEntry) error {
	what := fmt.Sprintf("file id %d", id)
	if fe := r.cp.files[id]; fe != nil {
		what = fmt.Sprintf("file id %d (%v %s)", id, fe.GetType(), fileName(fe))
	}
	ex := fOwnerEx{Type: int32(fo.GetPidType())}
	if fo.GetPid() != 0 {
		lookup := r.hostPid // a group's id is its leader's
		if ex.Type == fOwnerTid {
			lookup = r.hostTid
		}
		host, ok := lookup(int(fo.GetPid()))
		if !ok {
			return fmt.Errorf("%s: its SIGIO owner %d (type %d) is not in the restored tree: %w", what, fo.GetPid(), ex.Type, images.ErrCorrupt)
		}
		ex.Pid = int32(host)
	}
	if err := fcntlPtr(f, unix.F_SETOWN_EX, unsafe.Pointer(&ex)); err != nil {
		return fmt.Errorf("%s: F_SETOWN_EX: %w", what, err)
	}
	if _, err := fcntlRaw(f, unix.F_SETSIG, uintptr(fo.GetSignum())); err != nil {
		return fmt.Errorf("%s: F_SETSIG %d: %w", what, fo.GetSignum(), err)
	}
	return nil
}
