package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ctcr/ctcr/cgroup"
	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
	"github.com/ctcr/ctcr/criu/proc"
)

func dumpCmd(g *globalFlags, stdout io.Writer) *cobra.Command {
	var o criu.DumpOptions
	var preCopy bool
	c := &cobra.Command{
		Use:   "dump -t PID -D DIR",
		Short: "Checkpoint a process into a directory of images",
		Long: `Checkpoint the process PID into DIR (created if missing).

The process is stopped with ptrace while its state is read; by default it
is killed once the images are complete (as CRIU and vzctl do). With
--leave-running it resumes instead. If the dump fails, the process is
resumed untouched and DIR holds no partial checkpoint.

With --pre-copy the memory is copied while the process runs, in rounds
that copy again what it wrote meanwhile; the process is then stopped and
only the pages written since are copied, so it stays stopped for less
time. The pages copied early stay in DIR/pre-copy, which DIR/parent links
to, as in CRIU's pre-dump images.

With -D - the checkpoint goes to stdout as one tar archive, which
'ctcr restore -D -' reads from stdin:
    ctcr dump -t PID -D - | ssh host ctcr restore -D -
The pages go out as they are copied, each image in parts
(NAME.partNNNNNNNN, which restore joins), never staged on disk; the
other images are written into a private directory under $TMPDIR (or
/run/ctcr) and sent once complete, the manifest last. The tree stays
stopped until the last byte is out, and a failure to send it fails the
dump (the tree runs on). Not with --pre-copy or --prev-images-dir, nor
to a terminal; --json then prints on stderr. docs/streaming.md
describes the archive.

With --compress zstd the pages are stored compressed (pages-N.img.zst
instead of pages-N.img; compression.json says so), on every core; restore
decompresses them. The other images stay CRIU's; CRIU itself cannot
restore such a checkpoint.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.Pid <= 0 {
				return usageError{fmt.Errorf("dump needs -t PID")}
			}
			if o.Dir == "" {
				return usageError{fmt.Errorf("dump needs -D DIR")}
			}
			stream := o.Dir == streamDir
			jsonOut := stdout
			if stream {
				if preCopy || o.PrevDir != "" {
					return usageError{fmt.Errorf("-D - streams a whole checkpoint: not with --pre-copy or --prev-images-dir, whose parent images would not travel with it")}
				}
				dir, afterCommit, cleanup, err := streamOut("dump")
				if err != nil {
					return err
				}
				defer cleanup()
				o.Dir, o.AfterCommit = dir, afterCommit
				// Stdout is the archive's.
				jsonOut = cmd.ErrOrStderr()
			}
			if preCopy && o.PrevDir != "" {
				return usageError{fmt.Errorf("--pre-copy and --prev-images-dir both give the dump a parent image: give one")}
			}
			if err := criu.CheckCompression(o.Compress); err != nil {
				return usageError{err}
			}
			if o.TCPClose && o.TCPEstablished {
				return usageError{fmt.Errorf("--tcp-close ends the connections --tcp-established would move: give one")}
			}
			if err := notInTree(o.Pid); err != nil {
				return err
			}
			logf, done, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			defer done()
			o.Log = logf
			var pc *criu.PreCopy
			if preCopy {
				progress, endLine := g.progressLine(cmd.ErrOrStderr(), "pre-copied")
				pc, err = criu.StartPreCopy(criu.PreCopyOptions{Pid: o.Pid, Dir: o.Dir, Log: logf, Progress: progress})
				endLine()
				if err != nil {
					return fmt.Errorf("pre-copy of task %d failed: %w", o.Pid, err)
				}
				defer pc.Close()
				o.PreCopy = pc
			}
			saveHostSysV(&o)
			saveNestedNS(&o)
			var endLine func()
			o.Progress, endLine = g.progressLine(cmd.ErrOrStderr(), "dumped")
			st, err := criu.Dump(o)
			endLine()
			if errors.Is(err, images.ErrCheckpointExists) {
				return fmt.Errorf("dump of task %d: %s already holds a checkpoint (inventory.img): remove it or choose another -D", o.Pid, o.Dir)
			}
			if err != nil {
				return fmt.Errorf("dump of task %d failed: %w", o.Pid, err)
			}
			// The checkpoint is complete without it: a failure only
			// loses the timings show prints.
			if stream {
				// The archive left before the timings were known: they
				// are not in it.
				o.Dir = streamDir
			} else if err := writeStatsDump(o.Dir, st); err != nil {
				st.Warnings = append(st.Warnings, err.Error())
			}
			printWarnings(cmd.ErrOrStderr(), st.Warnings)
			if g.json {
				out := map[string]any{
					"pid": st.Pid, "dir": o.Dir, "tasks": st.Tasks, "pages_bytes": st.PagesBytes,
					"frozen_seconds": st.Frozen.Seconds(), "dump_seconds": st.Total.Seconds(),
					"memory_seconds": st.Memory.Seconds(), "warnings": st.Warnings,
				}
				if st.SnapshotCopy > 0 {
					out["snapshot_copy_seconds"] = st.SnapshotCopy.Seconds()
				}
				if pc != nil {
					out["pre_copy_bytes"], out["pre_copy_rounds"], out["pre_copy_seconds"] = pc.Bytes, pc.Rounds, pc.Time.Seconds()
				}
				return printJSON(jsonOut, out)
			}
			if logf != nil {
				logf("dumped task %d: %d bytes of memory, frozen %v, total %v", st.Pid, st.PagesBytes, st.Frozen, st.Total)
			}
			return nil
		},
	}
	f := c.Flags()
	f.IntVarP(&o.Pid, "tree", "t", 0, "PID of the process to checkpoint")
	f.StringVar(&o.PrevDir, "prev-images-dir", "", "a pre-dump of the tree (ctcr pre-dump; relative to DIR, or absolute): copy only the pages written since, and leave the rest to it (DIR/parent links to it)")
	f.BoolVar(&preCopy, "pre-copy", false, "copy the memory while the tree runs first (write tracking with userfaultfd, Linux 6.7), so that the dump, with the tree stopped, copies only the pages written since; the rest stays in DIR/pre-copy, the checkpoint's parent image")
	f.StringVarP(&o.Dir, "images-dir", "D", "", "directory to write the images to; - writes them to stdout as one tar archive (for 'ctcr restore -D -')")
	f.BoolVar(&o.LeaveRunning, "leave-running", false, "let the process run on after the dump")
	f.StringVar(&o.Compress, "compress", "", "store the page images compressed: zstd (pages-N.img.zst, which restore decompresses; CRIU and crit do not read them)")
	f.BoolVar(&o.NoSnapshot, "no-snapshot", false, "with --leave-running, copy the memory while the tree is stopped, not from copy-on-write snapshots of it once it runs again")
	f.BoolVar(&o.ShellJob, "shell-job", false, "allow terminal fds; restore attaches them to ctcr's terminal")
	f.BoolVar(&o.FileLocks, "file-locks", false, "dump the file locks the tasks hold (flock, POSIX, OFD); without it a held lock fails the dump")
	f.BoolVar(&o.TCPEstablished, "tcp-established", false, "move TCP connections whose other end is outside the tree too: their segments are dropped (an nftables table) from the dump until the restore")
	f.BoolVar(&o.TCPClose, "tcp-close", false, "dump every established TCP connection (and those waiting to be accepted) to come back as ended, instead of moving it (both ends in the tree) or failing (an end outside)")
	f.BoolVar(&o.ExtUnixSk, "ext-unix-sk", false, "dump unix sockets whose peer is outside the tree; restore --ext-unix-sk connects them to the peer's name again (a connection from a client with no name comes back closed by that client, with a warning)")
	ghostLimitFlag(c, &o.GhostLimit)
	o.ManageCgroups = cgroup.ModeSoft
	f.Var(&o.ManageCgroups, "manage-cgroups", "save the cgroups of tasks that are not in ctcr's own, with their properties (ignore: save none)")
	f.Lookup("manage-cgroups").NoOptDefVal = "soft"
	needsCaps(c)
	return exits(c, exitOK, exitFailure, exitUsage)
}

// notInTree refuses a dump of a tree that holds ctcr itself: ctcr
// cannot seize itself nor keep running while its ancestors are stopped,
// and a shell running `ctcr dump -t $$` meets exactly that.
func notInTree(pid int) error {
	self := os.Getpid()
	if pid == self {
		return usageError{fmt.Errorf("PID %d is ctcr itself", pid)}
	}
	for p, n := self, 0; p > 1 && n < 4096; n++ {
		st, err := proc.ReadStat(p, p)
		if err != nil {
			return nil // an ancestor exited: the check cannot see further
		}
		if st.PPid == pid {
			return fmt.Errorf("PID %d is an ancestor of ctcr: run ctcr from outside the tree, e.g. from another terminal or with setsid -f", pid)
		}
		p = st.PPid
	}
	return nil
}
