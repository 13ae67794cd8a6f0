package criurpc

import (
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/checkpoint-restore/go-criu/v7/rpc"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/internal/atomicfile"
)

// Exit statuses of the CRIU command line: CRIU exits 1 on any failure;
// ctcr keeps its own 2 for a command line it cannot parse.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// IsCRIUName says whether a program invoked as argv0 is to answer as
// CRIU: ctcr installed (or linked) as criu.
func IsCRIUName(argv0 string) bool {
	base := argv0
	if i := strings.LastIndexByte(base, '/'); i >= 0 {
		base = base[i+1:]
	}
	return base == "criu"
}

// Main runs ctcr as CRIU's command line with args (without the program
// name): `swrk FD`, `check`, `--version`, `dump`, `pre-dump`, `restore`.
// It returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "ctcr (as criu): usage: criu {swrk FD|check|dump|pre-dump|restore|--version} [options]")
		return exitUsage
	}
	switch args[0] {
	case "-V", "--version", "version":
		printVersion(stdout)
		return exitOK
	case "swrk":
		if len(args) != 2 {
			fmt.Fprintln(stderr, "ctcr (as criu): usage: criu swrk FD")
			return exitUsage
		}
		fd, err := strconv.Atoi(args[1])
		if err != nil || fd < 0 {
			fmt.Fprintf(stderr, "ctcr (as criu): swrk %q: not an fd number\n", args[1])
			return exitUsage
		}
		unix.CloseOnExec(fd)
		if err := Serve(fd, stderr); err != nil {
			fmt.Fprintf(stderr, "ctcr (as criu): swrk: %v\n", err)
			return exitFailure
		}
		return exitOK
	case "check":
		return check(args[1:], stdout, stderr)
	case "dump", "pre-dump", "restore":
		return command(args[0], args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "ctcr (as criu): unknown command %q (ctcr answers swrk, check, dump, pre-dump, restore, --version)\n", args[0])
	return exitUsage
}

// printVersion prints CRIU's version lines, which scripts and runtimes
// parse ("Version: 4.2"), and ctcr's own.
func printVersion(w io.Writer) {
	v := fmt.Sprintf("%d.%d", criuMajor, criuMinor)
	if criuSublevel != 0 {
		v += fmt.Sprintf(".%d", criuSublevel)
	}
	fmt.Fprintf(w, "Version: %s\nGitID: ctcr-%s\nctcr %s answers as CRIU %s\n", v, CtcrVersion, CtcrVersion, v)
}

// check is `criu check [--feature NAME]...`: exit 0 when the kernel has
// what ctcr needs (and each feature asked for).
func check(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("check", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	feats := fs.StringArray("feature", nil, "check one feature")
	fs.Bool("all", false, "check everything (ctcr always does)")
	fs.Bool("extra", false, "check extra features (ctcr always does)")
	if err := fs.Parse(args); err != nil {
		fmt.Fprintf(stderr, "ctcr (as criu): check: %v\n", err)
		return exitUsage
	}
	if err := criu.CheckFeatures(); err != nil {
		fmt.Fprintf(stderr, "Error: %v\n", err)
		return exitFailure
	}
	for _, f := range *feats {
		switch f {
		case "mem_dirty_track", "mem-dirty-track":
			if err := criu.CanTrackWrites(); err != nil {
				fmt.Fprintf(stderr, "Error: %s: %v\n", f, err)
				return exitFailure
			}
		default:
			fmt.Fprintf(stderr, "Error: feature %s is not supported by ctcr\n", f)
			return exitFailure
		}
	}
	fmt.Fprintln(stdout, "Looks good.")
	return exitOK
}

var verbosity = regexp.MustCompile(`^-v+[0-9]?$`)

// command runs dump, pre-dump or restore from CRIU's command line: the
// flags become the options of an RPC request, served by the same code
// as `swrk`, without a runtime to notify.
func command(name string, args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o := &rpc.CriuOpts{ImagesDirFd: proto.Int32(-1)}
	var (
		pid                                                     int
		imgDir, workDir, logFile, root, prev, freezeCg, pidFile string
		leave, shellJob, fileLocks, extUnix, tcpEst, tcpClose   bool
		trackMem, detached, sibling, evasive, stats, autoDedup  bool
		lazy                                                    bool
		external, inherit, extMnt, emptyNs                      []string
		manageCg, ghostLim                                      string
	)
	fs.IntVarP(&pid, "tree", "t", 0, "PID of the root of the tree to dump")
	fs.StringVarP(&imgDir, "images-dir", "D", ".", "images directory")
	fs.StringVarP(&workDir, "work-dir", "W", "", "work directory (logs, stats)")
	fs.StringVarP(&logFile, "log-file", "o", "", "log file name in the work directory")
	fs.StringVarP(&root, "root", "r", "", "root directory of the restored tree")
	fs.StringVar(&prev, "prev-images-dir", "", "pre-dump to take unchanged pages from (relative to -D)")
	fs.StringVar(&freezeCg, "freeze-cgroup", "", "freezer cgroup of the tree")
	fs.StringVar(&pidFile, "pidfile", "", "write the root's PID here")
	fs.BoolVarP(&leave, "leave-running", "R", false, "let the tree run on after the dump")
	fs.BoolVarP(&shellJob, "shell-job", "j", false, "allow terminal fds")
	fs.BoolVarP(&fileLocks, "file-locks", "l", false, "dump file locks")
	fs.BoolVarP(&extUnix, "ext-unix-sk", "x", false, "allow unix sockets with a peer outside the tree")
	fs.BoolVar(&tcpEst, "tcp-established", false, "dump established TCP connections")
	fs.BoolVar(&tcpClose, "tcp-close", false, "restore established TCP connections closed")
	fs.BoolVar(&trackMem, "track-mem", false, "track memory writes (always, with a pre-dump)")
	fs.BoolVarP(&detached, "restore-detached", "d", false, "do not wait for the restored root")
	fs.BoolVarP(&sibling, "restore-sibling", "S", false, "the restored root is left to ctcr's parent")
	fs.BoolVar(&evasive, "evasive-devices", false, "accepted")
	fs.BoolVar(&stats, "display-stats", false, "accepted")
	fs.BoolVar(&autoDedup, "auto-dedup", false, "not supported")
	fs.BoolVar(&lazy, "lazy-pages", false, "not supported")
	fs.StringArrayVar(&external, "external", nil, "external namespace TYPE[INODE]:KEY")
	fs.StringArrayVar(&inherit, "inherit-fd", nil, "fd[N]:KEY")
	fs.StringArrayVarP(&extMnt, "ext-mount-map", "M", nil, "KEY:VAL")
	fs.StringArrayVar(&emptyNs, "empty-ns", nil, "net")
	fs.StringVar(&manageCg, "manage-cgroups", "", "accepted")
	fs.StringVar(&ghostLim, "ghost-limit", "", "most data bytes of an unlinked file kept (K, M, G)")
	fs.Lookup("manage-cgroups").NoOptDefVal = "soft"
	level := int32(2)
	var rest []string
	for _, a := range args {
		if verbosity.MatchString(a) {
			if n := a[len(a)-1]; n >= '0' && n <= '9' {
				level = int32(n - '0')
			} else {
				level = int32(2 + len(a) - 1)
			}
			continue
		}
		rest = append(rest, a)
	}
	if err := fs.Parse(rest); err != nil {
		fmt.Fprintf(stderr, "ctcr (as criu): %s: %v\n", name, err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ctcr (as criu): %s: unexpected argument %q\n", name, fs.Arg(0))
		return exitUsage
	}
	if autoDedup || lazy {
		fmt.Fprintf(stderr, "ctcr (as criu): %s: --auto-dedup and --lazy-pages are not supported by ctcr\n", name)
		return exitFailure
	}
	o.ImagesDir, o.LogLevel, o.Root = proto.String(imgDir), proto.Int32(level), proto.String(root)
	if logFile != "" {
		o.LogFile = proto.String(logFile)
	}
	o.Pid, o.LeaveRunning, o.ShellJob, o.FileLocks = proto.Int32(int32(pid)), proto.Bool(leave), proto.Bool(shellJob), proto.Bool(fileLocks)
	o.ExtUnixSk, o.TcpEstablished, o.TcpClose, o.TrackMem = proto.Bool(extUnix), proto.Bool(tcpEst), proto.Bool(tcpClose), proto.Bool(trackMem)
	o.ParentImg, o.FreezeCgroup, o.External = proto.String(prev), proto.String(freezeCg), external
	for _, n := range emptyNs {
		if n != "net" {
			fmt.Fprintf(stderr, "ctcr (as criu): %s: --empty-ns %s: only net\n", name, n)
			return exitUsage
		}
		o.EmptyNs = proto.Uint32(unix.CLONE_NEWNET)
	}
	if ghostLim != "" {
		n, err := ParseSize(ghostLim)
		if err != nil || n > math.MaxUint32 {
			fmt.Fprintf(stderr, "ctcr (as criu): %s: --ghost-limit %q: a size under 4G expected\n", name, ghostLim)
			return exitUsage
		}
		o.GhostLimit = proto.Uint32(uint32(n))
	}
	for _, m := range extMnt {
		k, v, ok := strings.Cut(m, ":")
		if !ok {
			fmt.Fprintf(stderr, "ctcr (as criu): %s: --ext-mount-map %q: KEY:VAL expected\n", name, m)
			return exitUsage
		}
		o.ExtMnt = append(o.ExtMnt, &rpc.ExtMountMap{Key: proto.String(k), Val: proto.String(v)})
	}
	for _, in := range inherit {
		var fd int32
		var key string
		if n, err := fmt.Sscanf(in, "fd[%d]:", &fd); n != 1 || err != nil {
			fmt.Fprintf(stderr, "ctcr (as criu): %s: --inherit-fd %q: fd[N]:KEY expected\n", name, in)
			return exitUsage
		}
		_, key, _ = strings.Cut(in, "]:")
		o.InheritFd = append(o.InheritFd, &rpc.InheritFd{Key: proto.String(key), Fd: proto.Int32(fd)})
	}
	s := &session{fd: -1, stderr: stderr, workDir: workDir}
	var err error
	switch name {
	case "dump", "pre-dump":
		if pid <= 0 {
			fmt.Fprintf(stderr, "ctcr (as criu): %s needs -t PID\n", name)
			return exitUsage
		}
		_, err = s.dump(o, name == "pre-dump")
	case "restore":
		var rootPid int
		rootPid, err = s.restore(o)
		if err == nil {
			if pidFile != "" {
				if werr := atomicfile.WritePath(pidFile, []byte(strconv.Itoa(rootPid)+"\n"), 0o644); werr != nil {
					err = fmt.Errorf("pidfile: %w", werr)
				}
			}
			if err == nil && !detached && !sibling {
				return waitRoot(rootPid, stderr)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "Error (ctcr as criu): %v\n", err)
		return exitFailure
	}
	return exitOK
}

// waitRoot waits for the restored root, ctcr's child, and returns its
// exit status as CRIU's restore does without -d.
func waitRoot(pid int, stderr io.Writer) int {
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintf(stderr, "Error (ctcr as criu): wait for the restored task %d: %v\n", pid, err)
			return exitFailure
		}
		break
	}
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
