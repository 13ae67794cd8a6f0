package ns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/kernel"
	"github.com/ctcr/ctcr/criu/nsthread"
)

// POSIX message queues (mq_open) of a container's IPC namespace.
//
// Listing: a thread joins the namespace and opens the root of a detached
// mqueue mount (kernel.MqueueRoot: fsopen + fsmount). The other way, the
// container's own /dev/mqueue through /proc/PID/root, was not taken: the
// container may have no such mount, may have mounted another
// namespace's mqueue there, or anything else at that path, and walking
// a path the container controls from the host invites symlink tricks.
// The detached mount always shows the namespace's own queues, and
// leaves no trace in any mount namespace.
//
// Reading: a queue has no peek. Its messages are received, every one,
// and sent back at once in the order they came (highest priority first,
// oldest first within a priority): the kernel files each back behind
// the ones of its priority already sent, so the queue ends as it was.
// The tasks are stopped under ptrace meanwhile, none waits in
// mq_timedreceive or mq_timedsend (the stop took them out of it), so no
// message is taken or added between the two; a task of the namespace
// outside the dumped tree could, and checkpoint refuses such strays.
// A queue with an mq_notify registration is refused before any queue
// is touched: the first message sent back into the emptied queue would
// fire the notification, and the registration (a task and a sigevent)
// cannot be made again from outside the task.
//
// Image: CRIU has no image for POSIX queues, and its SysV ones
// (ipc-msg: IpcMsgEntry, IpcMsg) cannot hold them honestly: a queue is
// known by a name, which IpcDescEntry (a numeric key and id) has no
// field for, and it has two limits (mq_maxmsg, mq_msgsize) where a SysV
// queue has one (qbytes). So they go to a JSON file of their own in the
// images directory, documented here:
//
//	posix-mq.json
//	{
//	  "limits": {"queues_max": 256, "msg_max": 10, "msgsize_max": 8192,
//	             "msg_default": 10, "msgsize_default": 8192},
//	  "queues": [
//	    {"name": "q", "mode": 416, "uid": 0, "gid": 0,
//	     "maxmsg": 10, "msgsize": 64,
//	     "messages": [{"priority": 9, "data": "<base64>"}, ...]},   // queue order
//	    ...]
//	}
//
// "limits" are the namespace's /proc/sys/fs/mqueue settings, restored
// with the queues. Restore creates each queue in the restored root's
// new IPC namespace with its attributes, owner and mode, and sends its
// messages in order with their priorities, before any task runs.

// PosixMqFile is the name of the image of an IPC namespace's POSIX
// message queues in a checkpoint's images directory.
const PosixMqFile = "posix-mq.json"

// maxMqImage caps the size of posix-mq.json a restore reads.
const maxMqImage = 1 << 30

// ErrMqNotify: a queue has an mq_notify registration.
var ErrMqNotify = errors.New("has an mq_notify registration, which ctcr cannot restore (sending its messages back would fire it)")

type mqImage struct {
	Limits mqLimits  `json:"limits"`
	Queues []mqQueue `json:"queues"`
}

// mqLimits are the files of /proc/sys/fs/mqueue, per IPC namespace.
type mqLimits struct {
	QueuesMax      uint32 `json:"queues_max"`
	MsgMax         uint32 `json:"msg_max"`
	MsgsizeMax     uint32 `json:"msgsize_max"`
	MsgDefault     uint32 `json:"msg_default"`
	MsgsizeDefault uint32 `json:"msgsize_default"`
}

type mqQueue struct {
	Name     string      `json:"name"` // without the leading "/"
	Mode     uint32      `json:"mode"` // permission bits
	UID      uint32      `json:"uid"`
	GID      uint32      `json:"gid"`
	Maxmsg   int64       `json:"maxmsg"`
	Msgsize  int64       `json:"msgsize"`
	Messages []mqMessage `json:"messages"`
}

type mqMessage struct {
	Priority uint32 `json:"priority"`
	Data     []byte `json:"data"`
}

const mqSysctlDir = "/proc/sys/fs/mqueue/"

// fields returns the limits with their sysctl names, in the order they
// are written at restore (the maxima before the defaults they bound).
func (l *mqLimits) fields() []struct {
	name string
	v    *uint32
} {
	return []struct {
		name string
		v    *uint32
	}{{"queues_max", &l.QueuesMax}, {"msg_max", &l.MsgMax}, {"msgsize_max", &l.MsgsizeMax}, {"msg_default", &l.MsgDefault}, {"msgsize_default", &l.MsgsizeDefault}}
}

// readMqLimits reads the limits of the calling thread's IPC namespace:
// /proc/sys/fs/mqueue answers for the namespace of the reader.
func readMqLimits() (mqLimits, error) {
	var l mqLimits
	for _, f := range l.fields() {
		b, err := os.ReadFile(mqSysctlDir + f.name)
		if err != nil {
			return l, err
		}
		n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
		if err != nil {
			return l, fmt.Errorf("%s%s: %q", mqSysctlDir, f.name, b)
		}
		*f.v = uint32(n)
	}
	return l, nil
}

func writeMqLimits(l mqLimits) error {
	for _, f := range l.fields() {
		if err := os.WriteFile(mqSysctlDir+f.name, []byte(strconv.FormatUint(uint64(*f.v), 10)), 0); err != nil {
			return fmt.Errorf("set %s%s to %d: %w", mqSysctlDir, f.name, *f.v, err)
		}
	}
	return nil
}

// notifyPid parses NOTIFY_PID of the text a queue file reads as:
// "QSIZE:%-10lu NOTIFY:%-5d SIGNO:%-5d NOTIFY_PID:%-6d" (ipc/mqueue.c).
func notifyPid(status string) (int, error) {
	for _, f := range strings.Fields(status) {
		if v, ok := strings.CutPrefix(f, "NOTIFY_PID:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, fmt.Errorf("no NOTIFY_PID in %q", status)
}

// openQueue is one queue being dumped: its entry and an O_RDWR,
// O_NONBLOCK descriptor.
type openQueue struct {
	q  mqQueue
	fd int
}

// DumpMqueues records the POSIX message queues of pid's IPC namespace,
// with their messages, and the namespace's mqueue limits in
// posix-mq.json. Preconditions: every task that may use the queues is
// stopped.
func DumpMqueues(pid int, stage *images.Staging) error {
	return dumpMqueuesAs(pid, stage, PosixMqFile)
}

// nestedMqFile names the POSIX queues image of nested IPC namespace id:
// posix-mq-ID.json, in the format of posix-mq.json.
func nestedMqFile(id int) string { return fmt.Sprintf("posix-mq-%d.json", id) }

// dumpMqueuesAs is DumpMqueues into the image file name.
func dumpMqueuesAs(pid int, stage *images.Staging, name string) error {
	var img mqImage
	err := inNamespace(pid, "ipc", unix.CLONE_NEWIPC, func() error {
		var err error
		if img.Limits, err = readMqLimits(); err != nil {
			return err
		}
		qs, err := openQueues()
		defer func() {
			for _, q := range qs {
				unix.Close(q.fd)
			}
		}()
		if err != nil {
			return err
		}
		for _, q := range qs {
			msgs, err := drainAndRefill(q)
			if err != nil {
				return err
			}
			q.q.Messages = msgs
			img.Queues = append(img.Queues, q.q)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("POSIX message queues of task %d: %w", pid, err)
	}
	b, err := json.MarshalIndent(&img, "", " ")
	if err != nil {
		return err
	}
	return stage.WriteFile(name, b)
}

// openQueues opens every queue of the calling thread's IPC namespace and
// reads its owner, mode and attributes; it fails, touching no message,
// if one has an mq_notify registration.
func openQueues() ([]*openQueue, error) {
	root, err := kernel.MqueueRoot()
	if err != nil {
		return nil, err
	}
	defer root.Close()
	names, err := root.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list the queues: %w", err)
	}
	sort.Strings(names)
	var qs []*openQueue
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(int(root.Fd()), name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue // unlinked since the listing
			}
			return qs, fmt.Errorf("queue /%s: %w", name, err)
		}
		fd, err := kernel.MqOpen(name, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0, nil)
		if err != nil {
			return qs, fmt.Errorf("queue /%s: %w", name, err)
		}
		qs = append(qs, &openQueue{fd: fd, q: mqQueue{Name: name, Mode: st.Mode & 0o7777, UID: st.Uid, GID: st.Gid}})
		attr, err := kernel.MqGetattr(fd)
		if err != nil {
			return qs, fmt.Errorf("queue /%s: %w", name, err)
		}
		qs[len(qs)-1].q.Maxmsg, qs[len(qs)-1].q.Msgsize = attr.Maxmsg, attr.Msgsize
		// The queue file reads as its status; pread leaves the
		// descriptor's position alone.
		var buf [256]byte
		n, err := unix.Pread(fd, buf[:], 0)
		if err != nil {
			return qs, fmt.Errorf("queue /%s: read its status: %w", name, err)
		}
		np, err := notifyPid(string(buf[:n]))
		if err != nil {
			return qs, fmt.Errorf("queue /%s: %w", name, err)
		}
		if np != 0 {
			return qs, fmt.Errorf("queue /%s %w (registered by process %d, as numbered in its PID namespace)", name, ErrMqNotify, np)
		}
	}
	return qs, nil
}

// drainAndRefill receives every message of q and sends them all back in
// the same order, returning them.
func drainAndRefill(q *openQueue) ([]mqMessage, error) {
	attr, err := kernel.MqGetattr(q.fd)
	if err != nil {
		return nil, fmt.Errorf("queue /%s: %w", q.q.Name, err)
	}
	var msgs []mqMessage
	var rerr error
	buf := make([]byte, max(attr.Msgsize, 1))
	for i := int64(0); i < attr.Curmsgs; i++ {
		n, prio, err := kernel.MqReceive(q.fd, buf)
		if err != nil {
			rerr = fmt.Errorf("queue /%s: message %d of %d: %w", q.q.Name, i+1, attr.Curmsgs, err)
			break
		}
		msgs = append(msgs, mqMessage{Priority: prio, Data: append([]byte(nil), buf[:n]...)})
	}
	// Put back whatever was taken, even after a failed receive.
	for i, m := range msgs {
		if err := kernel.MqSend(q.fd, m.Data, m.Priority); err != nil {
			return nil, fmt.Errorf("queue /%s: put back message %d of %d (priority %d): %w; the messages after it are lost", q.q.Name, i+1, len(msgs), m.Priority, err)
		}
	}
	return msgs, rerr
}

// readMqImage reads and checks posix-mq.json.
func readMqImage(path string) (*mqImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMqImage+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxMqImage {
		return nil, fmt.Errorf("%s: larger than %d bytes: %w", path, maxMqImage, images.ErrCorrupt)
	}
	var img mqImage
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", path, err, images.ErrCorrupt)
	}
	seen := map[string]bool{}
	for i, q := range img.Queues {
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%s: queue %d (%q): %s: %w", path, i, q.Name, fmt.Sprintf(format, args...), images.ErrCorrupt)
		}
		switch {
		case q.Name == "" || q.Name == "." || q.Name == ".." || len(q.Name) > kernel.MQ_NAME_MAX || strings.ContainsAny(q.Name, "/\x00"):
			return nil, bad("not a queue name")
		case seen[q.Name]:
			return nil, bad("named twice")
		case q.Mode&^0o7777 != 0:
			return nil, bad("mode %#o", q.Mode)
		case q.Maxmsg < 1 || q.Maxmsg > kernel.HARD_MSGMAX:
			return nil, bad("maxmsg %d", q.Maxmsg)
		case q.Msgsize < 1 || q.Msgsize > kernel.HARD_MSGSIZEMAX:
			return nil, bad("msgsize %d", q.Msgsize)
		case int64(len(q.Messages)) > q.Maxmsg:
			return nil, bad("%d messages, maxmsg %d", len(q.Messages), q.Maxmsg)
		}
		seen[q.Name] = true
		for j, m := range q.Messages {
			if int64(len(m.Data)) > q.Msgsize || m.Priority >= kernel.MQ_PRIO_MAX {
				return nil, bad("message %d: %d bytes at priority %d", j, len(m.Data), m.Priority)
			}
		}
	}
	return &img, nil
}

// RestoreMqueues recreates the queues of imgDir's posix-mq.json in pid's
// (new) IPC namespace, with their attributes, owner, mode and messages,
// and sets the namespace's mqueue limits as they were.
func RestoreMqueues(pid int, imgDir string) error {
	return restoreMqueuesAs(pid, imgDir, PosixMqFile)
}

// restoreMqueuesAs is RestoreMqueues from the image file name.
func restoreMqueuesAs(pid int, imgDir, name string) error {
	path := filepath.Join(imgDir, name)
	img, err := readMqImage(path)
	if err != nil {
		return err
	}
	// ctcr lacks CAP_SYS_RESOURCE on some hosts: mq_open then holds a
	// queue to the namespace's msg_max, msgsize_max and queues_max.
	// Widen them to what the queues need while they are created; the
	// dumped values are set last.
	wide := img.Limits
	wide.QueuesMax = max(wide.QueuesMax, uint32(len(img.Queues)))
	for _, q := range img.Queues {
		wide.MsgMax = max(wide.MsgMax, uint32(q.Maxmsg))
		wide.MsgsizeMax = max(wide.MsgsizeMax, uint32(q.Msgsize))
	}
	err = nsthread.Run(func() error {
		if err := nsthread.Join(pid, "ipc", unix.CLONE_NEWIPC); err != nil {
			return err
		}
		// A namespace's mqueue limits are its root's to write.
		return criu.AsInsideRoot(imgDir)
	}, func() error {
		if err := writeMqLimits(wide); err != nil {
			return err
		}
		for _, q := range img.Queues {
			if err := createQueue(q); err != nil {
				return err
			}
		}
		return writeMqLimits(img.Limits)
	})
	if err != nil {
		return fmt.Errorf("POSIX message queues of %s: %w", path, err)
	}
	return nil
}

func createQueue(q mqQueue) error {
	attr := kernel.MqAttr{Maxmsg: q.Maxmsg, Msgsize: q.Msgsize}
	fd, err := kernel.MqOpen(q.Name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, q.Mode, &attr)
	if err != nil {
		if errors.Is(err, unix.EMFILE) {
			// ipc/mqueue.c charges every queue's maxmsg * msgsize
			// to its creator's RLIMIT_MSGQUEUE.
			return fmt.Errorf("create queue /%s (maxmsg %d, msgsize %d): %w: ctcr's RLIMIT_MSGQUEUE is spent", q.Name, q.Maxmsg, q.Msgsize, err)
		}
		return fmt.Errorf("create queue /%s (maxmsg %d, msgsize %d): %w", q.Name, q.Maxmsg, q.Msgsize, err)
	}
	defer unix.Close(fd)
	// mq_open applied ctcr's umask: set the mode as it was.
	if err := unix.Fchown(fd, int(q.UID), int(q.GID)); err != nil {
		return fmt.Errorf("queue /%s: owner %d:%d: %w", q.Name, q.UID, q.GID, err)
	}
	if err := unix.Fchmod(fd, q.Mode); err != nil {
		return fmt.Errorf("queue /%s: mode %#o: %w", q.Name, q.Mode, err)
	}
	for i, m := range q.Messages {
		if err := kernel.MqSend(fd, m.Data, m.Priority); err != nil {
			return fmt.Errorf("queue /%s: message %d of %d (priority %d): %w", q.Name, i+1, len(q.Messages), m.Priority, err)
		}
	}
	return nil
}
