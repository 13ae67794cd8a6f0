package criurpc

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/container"
	"github.com/ctcr/ctcr/criu"
)

// The CRIU version ctcr answers with. Runtimes gate features on it:
// runc wants 3.0 for the VERSION call itself, 3.11 for external network
// namespaces, 3.14 for the cgroup v2 freezer, 3.15 for external PID
// namespaces, 3.16 for LSM options; podman wants 3.11, and 3.16 for
// pods. go-criu's GetCriuVersion reads it as major*10000 + minor*100 +
// sublevel (40200).
const (
	criuMajor    = 4
	criuMinor    = 2
	criuSublevel = 0
)

// CtcrVersion is ctcr's own version, said next to the CRIU one.
var CtcrVersion = container.Version

// maxMessage bounds one request record. A request holds options and
// paths only; runc's largest (many ext_mnt and inherit_fd) are a few KiB.
const maxMessage = 1 << 20

// notifyWait bounds how long ctcr waits for the runtime to answer one
// notification (runc runs OCI hooks on setup-namespaces).
const notifyWait = 5 * time.Minute

// session is one `criu swrk` connection.
type session struct {
	fd   int // the SOCK_SEQPACKET socket
	peer int // the runtime's PID (SO_PEERCRED): its fds are named in requests
	// log is the log of the current request (dump.log, restore.log in
	// the work directory), nil when none is open.
	log *log.Logger
	// stderr hears errors too: runc gives criu its own stderr (or the
	// container's), where an operator looks first.
	stderr io.Writer
	// workDir is the work directory given by path (the command line's
	// -W), used when a request has no work_dir_fd.
	workDir string
}

// Serve answers CRIU's RPC on the socket fd until the runtime closes it,
// or after a DUMP or RESTORE that did not ask to keep it open (CRIU's
// swrk exits then; runc waits for that exit).
func Serve(fd int, stderr io.Writer) error {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return fmt.Errorf("swrk socket fd %d: SO_PEERCRED: %w", fd, err)
	}
	s := &session{fd: fd, peer: int(cred.Pid), stderr: stderr}
	for {
		req, err := s.recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		resp := s.handle(req)
		if err := s.send(resp, -1); err != nil {
			return err
		}
		switch req.GetType() {
		case rpc.CriuReqType_DUMP, rpc.CriuReqType_RESTORE:
			if !req.GetKeepOpen() {
				return nil
			}
		}
	}
}

// recv reads one request record; io.EOF when the runtime closed its end.
func (s *session) recv() (*rpc.CriuReq, error) {
	buf := make([]byte, maxMessage)
	for {
		n, _, flags, _, err := unix.Recvmsg(s.fd, buf, nil, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("swrk socket: receive: %w", err)
		}
		if n == 0 {
			return nil, io.EOF
		}
		if flags&unix.MSG_TRUNC != 0 {
			return nil, fmt.Errorf("swrk socket: a request of over %d bytes", maxMessage)
		}
		req := &rpc.CriuReq{}
		if err := proto.Unmarshal(buf[:n], req); err != nil {
			return nil, fmt.Errorf("swrk socket: a request that is no criu_req: %w", err)
		}
		return req, nil
	}
}

// send writes one response record, with fd attached (SCM_RIGHTS) unless
// it is negative.
func (s *session) send(resp *rpc.CriuResp, fd int) error {
	b, err := proto.Marshal(resp)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	for {
		err = unix.Sendmsg(s.fd, b, oob, nil, 0)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("swrk socket: send the %s response: %w", resp.GetType(), err)
	}
	return nil
}

// notify tells the runtime that the operation reached the phase script
// (CRIU's action scripts) and waits for its go-ahead. pid, if not zero,
// is the restored root's host PID (setup-namespaces, post-restore).
func (s *session) notify(script string, pid int, fd int) error {
	_, err := s.ask(script, pid, fd)
	return err
}

// ask is notify that returns the runtime's answer, whose opts may carry
// more (query-ext-files: external objects). nil from the command line.
func (s *session) ask(script string, pid int, fd int) (*rpc.CriuReq, error) {
	if s.fd < 0 {
		return nil, nil // the command line: no runtime to ask
	}
	start := time.Now()
	n := &rpc.CriuNotify{Script: proto.String(script)}
	if pid != 0 {
		n.Pid = proto.Int32(int32(pid))
	}
	if err := s.send(&rpc.CriuResp{Type: rpc.CriuReqType_NOTIFY.Enum(), Success: proto.Bool(true), Notify: n}, fd); err != nil {
		return nil, err
	}
	done := make(chan struct{})
	var req *rpc.CriuReq
	var err error
	go func() {
		req, err = s.recv()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(notifyWait):
		// The runtime hangs in its handler (a hook that never ends):
		// shutting the socket down ends the receive.
		unix.Shutdown(s.fd, unix.SHUT_RDWR)
		<-done
		return nil, fmt.Errorf("notification %s: the runtime did not answer within %v", script, notifyWait)
	}
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("notification %s: the runtime closed the connection", script)
	}
	if err != nil {
		return nil, fmt.Errorf("notification %s: %w", script, err)
	}
	if req.GetType() != rpc.CriuReqType_NOTIFY || !req.GetNotifySuccess() {
		return nil, fmt.Errorf("notification %s: the runtime reported a failure of its handler", script)
	}
	s.logf("notification %s answered in %v", script, time.Since(start))
	return req, nil
}

func (s *session) logf(format string, args ...any) {
	if s.log != nil {
		s.log.Printf(format, args...)
	}
}

// handle serves one request and builds its response; a failure is a
// response with success false and the reason in cr_errmsg.
func (s *session) handle(req *rpc.CriuReq) *rpc.CriuResp {
	t := req.GetType()
	resp := &rpc.CriuResp{Type: t.Enum(), Success: proto.Bool(true)}
	var err error
	switch t {
	case rpc.CriuReqType_VERSION:
		resp.Version = &rpc.CriuVersion{
			MajorNumber: proto.Int32(criuMajor), MinorNumber: proto.Int32(criuMinor), Sublevel: proto.Int32(criuSublevel),
			// No gitid: go-criu (and runc) read one as a build from git
			// after the release, and count the next minor version.
			Name: proto.String("ctcr " + CtcrVersion),
		}
	case rpc.CriuReqType_CHECK:
		err = criu.CheckFeatures()
	case rpc.CriuReqType_FEATURE_CHECK:
		resp.Features = features(req.GetFeatures())
	case rpc.CriuReqType_DUMP:
		if _, err = s.dump(req.GetOpts(), false); err == nil {
			resp.Dump = &rpc.CriuDumpResp{Restored: proto.Bool(false)}
		}
	case rpc.CriuReqType_PRE_DUMP, rpc.CriuReqType_SINGLE_PRE_DUMP:
		_, err = s.dump(req.GetOpts(), true)
	case rpc.CriuReqType_RESTORE:
		var pid int
		pid, err = s.restore(req.GetOpts())
		if err == nil {
			resp.Restore = &rpc.CriuRestoreResp{Pid: proto.Int32(int32(pid))}
		}
	default:
		err = fmt.Errorf("request %s is not supported by ctcr", t)
	}
	if err != nil {
		resp.Success = proto.Bool(false)
		resp.CrErrmsg = proto.String(err.Error())
		var errno syscall.Errno
		if errors.As(err, &errno) {
			resp.CrErrno = proto.Int32(int32(errno))
		}
		fmt.Fprintf(s.stderr, "ctcr (as criu): %s: %v\n", strings.ToLower(t.String()), err)
	}
	return resp
}

// features answers FEATURE_CHECK for what was asked: mem_track is write
// tracking with userfaultfd (ctcr needs no soft-dirty bit); lazy pages
// and the pidfd store ctcr does not have.
func features(asked *rpc.CriuFeatures) *rpc.CriuFeatures {
	out := &rpc.CriuFeatures{}
	if asked == nil {
		asked = &rpc.CriuFeatures{MemTrack: proto.Bool(true), LazyPages: proto.Bool(true), PidfdStore: proto.Bool(true)}
	}
	if asked.MemTrack != nil {
		out.MemTrack = proto.Bool(criu.CanTrackWrites() == nil)
	}
	if asked.LazyPages != nil {
		out.LazyPages = proto.Bool(false)
	}
	if asked.PidfdStore != nil {
		out.PidfdStore = proto.Bool(false)
	}
	return out
}

// peerDir returns the path of the directory the runtime holds open as
// fd (its images_dir_fd or work_dir_fd): the engine writes by path. The
// path is checked to lead to that same directory.
func (s *session) peerDir(fd int32, what string) (string, error) {
	link := fmt.Sprintf("/proc/%d/fd/%d", s.peer, fd)
	f, err := os.Open(link)
	if err != nil {
		return "", fmt.Errorf("%s fd %d of the runtime (PID %d): %w", what, fd, s.peer, err)
	}
	defer f.Close()
	var held unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &held); err != nil {
		return "", fmt.Errorf("%s %s: %w", what, link, err)
	}
	if held.Mode&unix.S_IFMT != unix.S_IFDIR {
		return "", fmt.Errorf("%s fd %d of the runtime is not a directory", what, fd)
	}
	path, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, link, err)
	}
	var named unix.Stat_t
	if !filepath.IsAbs(path) || unix.Stat(path, &named) != nil || named.Dev != held.Dev || named.Ino != held.Ino {
		return "", fmt.Errorf("%s fd %d of the runtime (%s) is not reachable by that path from ctcr", what, fd, path)
	}
	return path, nil
}

// dirs returns the images and work directories of a request: from the
// runtime's fds, or images_dir when images_dir_fd is -1; the work
// directory defaults to the images directory, as in CRIU.
func (s *session) dirs(o *rpc.CriuOpts) (imgDir, workDir string, err error) {
	if fd := o.GetImagesDirFd(); fd >= 0 {
		if imgDir, err = s.peerDir(fd, "images_dir_fd"); err != nil {
			return "", "", err
		}
	} else if imgDir = o.GetImagesDir(); imgDir == "" {
		return "", "", fmt.Errorf("the request names no images directory (images_dir_fd or images_dir)")
	}
	workDir = imgDir
	if s.workDir != "" {
		workDir = s.workDir
	}
	if o.WorkDirFd != nil {
		if workDir, err = s.peerDir(o.GetWorkDirFd(), "work_dir_fd"); err != nil {
			return "", "", err
		}
	}
	return imgDir, workDir, nil
}

// openLog opens the request's log_file in the work directory (CRIU
// allows no directory in the name) and returns the function that
// closes it.
func (s *session) openLog(o *rpc.CriuOpts, workDir, def string) (func(), error) {
	name := o.GetLogFile()
	if name == "" {
		name = def
	}
	if strings.Contains(name, "/") || name == "." || name == ".." {
		return nil, fmt.Errorf("log_file %q: a name in the work directory, without /, is expected", name)
	}
	path := filepath.Join(workDir, name)
	os.Remove(path) // a log of an earlier run; O_EXCL below refuses a planted link
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	s.log = log.New(f, "", log.Lmicroseconds)
	s.log.Printf("ctcr %s answering as CRIU %d.%d.%d for PID %d", CtcrVersion, criuMajor, criuMinor, criuSublevel, s.peer)
	return func() { s.log = nil; f.Close() }, nil
}

// endLog writes a failure into the request's log, where runc points
// the user ("log file: .../dump.log"), and closes it.
func (s *session) endLog(err error, closeLog func()) {
	if err != nil {
		s.logf("Error: %v", err)
	}
	closeLog()
}
