package proc

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func testdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func findMapping(ms []Mapping, start uint64) (Mapping, bool) {
	for _, m := range ms {
		if m.Start == start {
			return m, true
		}
	}
	return Mapping{}, false
}

func TestParseMaps(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		start uint64
		want  Mapping
	}{
		{
			name: "a shared mapping of an unlinked file keeps its path and is marked deleted",
			file: "maps-deleted-file-shm-memfd", start: 0x7fc9bdd0c000,
			want: Mapping{Start: 0x7fc9bdd0c000, End: 0x7fc9bdd0e000, Read: true, Write: true, Shared: true,
				Major: 0xfe, Inode: 9978060, Path: "/tmp/cap/out/.tmp deleted file", Deleted: true},
		},
		{
			name: "shared anonymous memory reads as a deleted /dev/zero",
			file: "maps-deleted-file-shm-memfd", start: 0x7fc9bdd08000,
			want: Mapping{Start: 0x7fc9bdd08000, End: 0x7fc9bdd0c000, Read: true, Write: true, Shared: true,
				Minor: 1, Inode: 24, Path: "/dev/zero", Deleted: true},
		},
		{
			name: "a memfd mapping keeps the space in its name",
			file: "maps-deleted-file-shm-memfd", start: 0x7fc9bdb1f000,
			want: Mapping{Start: 0x7fc9bdb1f000, End: 0x7fc9bdb20000, Read: true, Shared: true,
				Minor: 1, Inode: 25, Path: "/memfd:ctcr memfd", Deleted: true},
		},
		{
			name: "a private file mapping has its offset",
			file: "maps-deleted-file-shm-memfd", start: 0x7fc9bdcf6000,
			want: Mapping{Start: 0x7fc9bdcf6000, End: 0x7fc9bdcf8000, Read: true, Write: true,
				Offset: 0x1d3000, Major: 0xfe, Inode: 326269, Path: "/usr/lib/x86_64-linux-gnu/libc.so.6"},
		},
		{
			name: "an anonymous mapping has an empty path despite the trailing space",
			file: "maps-deleted-file-shm-memfd", start: 0x7fc9bdd0e000,
			want: Mapping{Start: 0x7fc9bdd0e000, End: 0x7fc9bdd10000, Read: true, Write: true},
		},
		{
			name: "a PROT_NONE guard has no permission",
			file: "maps-deleted-file-shm-memfd", start: 0x7fc9bd31c000,
			want: Mapping{Start: 0x7fc9bd31c000, End: 0x7fc9bd31d000},
		},
		{
			name: "the heap is named in brackets",
			file: "maps-deleted-file-shm-memfd", start: 0x56514fac6000,
			want: Mapping{Start: 0x56514fac6000, End: 0x56514fae7000, Read: true, Write: true, Exec: true, Path: "[heap]"},
		},
		{
			name: "vvar_vclock is kept as printed",
			file: "maps-deleted-file-shm-memfd", start: 0x7fc9bdd14000,
			want: Mapping{Start: 0x7fc9bdd14000, End: 0x7fc9bdd16000, Read: true, Path: "[vvar_vclock]"},
		},
		{
			name: "vsyscall above the user address space is execute-only",
			file: "maps-deleted-file-shm-memfd", start: 0xffffffffff600000,
			want: Mapping{Start: 0xffffffffff600000, End: 0xffffffffff601000, Exec: true, Path: "[vsyscall]"},
		},
		{
			name: "trailing spaces of a file name are part of the path",
			file: "maps-odd-names", start: 0x7ffa0d73e000,
			want: Mapping{Start: 0x7ffa0d73e000, End: 0x7ffa0d73f000, Read: true,
				Major: 0xfe, Inode: 9978155, Path: "/tmp/cap/out/.tmp  two spaces "},
		},
		{
			name: "a live file named with a newline and a (deleted) suffix cannot be told from a deleted one",
			file: "maps-odd-names", start: 0x7ffa0d73f000,
			want: Mapping{Start: 0x7ffa0d73f000, End: 0x7ffa0d740000, Read: true,
				Major: 0xfe, Inode: 9978154, Path: `/tmp/cap/out/.tmp new\012line`, Deleted: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := testdata(t, tt.file)
			ms, err := ParseMaps(bytes.NewReader(b))
			if err != nil {
				t.Fatal(err)
			}
			if n := bytes.Count(b, []byte("\n")); len(ms) != n {
				t.Errorf("got %d mappings from %d lines", len(ms), n)
			}
			got, ok := findMapping(ms, tt.start)
			if !ok {
				t.Fatalf("no mapping starts at %#x", tt.start)
			}
			if got != tt.want {
				t.Errorf("mapping at %#x:\n got %+v\nwant %+v", tt.start, got, tt.want)
			}
		})
	}

	t.Run("a zombie has an empty maps file and no mappings", func(t *testing.T) {
		ms, err := ParseMaps(bytes.NewReader(testdata(t, "maps-zombie")))
		if err != nil || len(ms) != 0 {
			t.Errorf("got %v, %v; want no mappings, no error", ms, err)
		}
	})
	// This kernel lacks CONFIG_ANON_VMA_NAME, so no capture has one; the
	// line follows show_map_vma's format.
	t.Run("a named anonymous mapping keeps its [anon:] name", func(t *testing.T) {
		line := "7f0000000000-7f0000003000 rw-p 00000000 00:00 0                          [anon:ctcr test area]\n"
		ms, err := ParseMaps(strings.NewReader(line))
		if err != nil {
			t.Fatal(err)
		}
		if len(ms) != 1 || ms[0].Path != "[anon:ctcr test area]" || ms[0].Deleted {
			t.Errorf("got %+v", ms)
		}
	})
}

func TestParseMapsRejects(t *testing.T) {
	good := "7fc9bdd0e000-7fc9bdd10000 rw-p 00000000 00:00 0 \n"
	tests := []struct {
		name, line, wantErr string
	}{
		{"a range without a dash is rejected", "7fc9bdd0e000 rw-p 00000000 00:00 0", "no '-'"},
		{"an inverted range is rejected", "7fc9bdd10000-7fc9bdd0e000 rw-p 00000000 00:00 0", "inverted"},
		{"an empty range is rejected", "7fc9bdd10000-7fc9bdd10000 rw-p 00000000 00:00 0", "inverted"},
		{"three permission letters are rejected", "1000-2000 rw- 00000000 00:00 0", "not 4 characters"},
		{"a permission letter out of place is rejected", "1000-2000 wr-p 00000000 00:00 0", "bad character"},
		{"a sharing flag other than s or p is rejected", "1000-2000 rw-x 00000000 00:00 0", "'s' or 'p'"},
		{"a device without a colon is rejected", "1000-2000 rw-p 00000000 0000 0", "no ':'"},
		{"a decimal inode with hex digits is rejected", "1000-2000 rw-p 00000000 00:00 1f", "inode"},
		{"a line of four fields is rejected", "1000-2000 rw-p 00000000 00:00", "fewer than 5"},
		{"an empty line is rejected", "", "fewer than 5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMaps(strings.NewReader(good + tt.line + "\n"))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "maps line 2: ") || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not name line 2 and say %q", err, tt.wantErr)
			}
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line != 2 {
				t.Errorf("error %#v is not a *ParseError for line 2", err)
			}
		})
	}
}

func TestParseStatus(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		check func(t *testing.T, s *Status)
	}{
		{"a comm with spaces and parentheses is the name", "status-odd-comm-two-threads", func(t *testing.T, s *Status) {
			eq(t, "Name", s.Name, "a) b (c) d)")
			eq(t, "State", s.State, 'R')
			eq(t, "Umask", s.Umask, 0o027)
			eq(t, "HasUmask", s.HasUmask, true)
			eq(t, "Tgid", s.Tgid, 2866)
			eq(t, "Pid", s.Pid, 2866)
			eq(t, "PPid", s.PPid, 2854)
			eq(t, "Threads", s.Threads, 2)
			eq(t, "ShdPnd", s.ShdPnd, 1<<(10-1)) // SIGUSR1 sent to the process
			eq(t, "SigBlk", s.SigBlk, 1<<(10-1)|1<<(15-1))
			eq(t, "SigIgn", s.SigIgn, 1)                  // SIGHUP (1<<(1-1))
			eq(t, "SigCgt", s.SigCgt, 1<<(2-1)|1<<(33-1)) // SIGINT and glibc's SIGCANCEL
			eq(t, "CapEff", s.CapEff, 0x000001fffeffffff)
			eq(t, "NSsid", s.NSsid, []int{2061})
		}},
		{"a second thread has its own pid and pending set", "status-second-thread", func(t *testing.T, s *Status) {
			eq(t, "Tgid", s.Tgid, 2866)
			eq(t, "Pid", s.Pid, 2867)
			eq(t, "SigPnd", s.SigPnd, 1<<(12-1)) // SIGUSR2 by tgkill
			eq(t, "SigBlk", s.SigBlk, 0x0000001000004a00)
		}},
		{"a zombie has no umask", "status-zombie", func(t *testing.T, s *Status) {
			eq(t, "State", s.State, 'Z')
			eq(t, "HasUmask", s.HasUmask, false)
		}},
		{"a traced task names its tracer", "status-traced", func(t *testing.T, s *Status) {
			eq(t, "State", s.State, 't')
			eq(t, "TracerPid", s.TracerPid, 3284)
		}},
		{"a seccomp filter and no_new_privs are reported", "status-seccomp-filter", func(t *testing.T, s *Status) {
			eq(t, "NoNewPrivs", s.NoNewPrivs, true)
			eq(t, "Seccomp", s.Seccomp, 2)
		}},
		{"a task two PID namespaces deep lists three ids", "status-nested-pidns-setpriv", func(t *testing.T, s *Status) {
			eq(t, "NSpid", s.NSpid, []int{3343, 4, 2})
			eq(t, "NStgid", s.NStgid, []int{3343, 4, 2})
			eq(t, "NSpgid", s.NSpgid, []int{3336, 0, 0})
			eq(t, "Uid", s.Uid, [4]uint32{1000, 1000, 1000, 1000})
			eq(t, "Gid", s.Gid, [4]uint32{1001, 1001, 1001, 1001})
			eq(t, "Groups", s.Groups, []uint32{10, 20, 30, 65534})
			eq(t, "CapEff", s.CapEff, 0)
		}},
		{"a task without supplementary groups has none", "status-init", func(t *testing.T, s *Status) {
			eq(t, "Groups", len(s.Groups), 0)
			eq(t, "PPid", s.PPid, 0)
		}},
		{"an escaped newline in the name is unescaped", "status-newline-comm", func(t *testing.T, s *Status) {
			eq(t, "Name", s.Name, "x\ny) 1 2 3 (")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseStatus(bytes.NewReader(testdata(t, tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s)
		})
	}
}

func TestParseStatusRejects(t *testing.T) {
	full := string(testdata(t, "status-init"))
	tests := []struct {
		name, in, wantErr string
	}{
		{"a line without a colon is rejected", full + "garbage\n", "line 60: no ':'"},
		{"a missing Pid line is rejected", strings.Replace(full, "Pid:\t1\n", "", 1), "no Pid: line"},
		{"three uids are rejected", strings.Replace(full, "Uid:\t0\t0\t0\t0", "Uid:\t0\t0\t0", 1), "line 9: Uid: want 4 ids"},
		{"a non-hex signal mask is rejected", strings.Replace(full, "SigBlk:\t0000000000000000", "SigBlk:\tzz", 1), "SigBlk"},
		{"an umask that is not octal is rejected", strings.Replace(full, "Umask:\t0022", "Umask:\t0099", 1), "line 2: Umask"},
		{"NoNewPrivs other than 0 or 1 is rejected", strings.Replace(full, "NoNewPrivs:\t0", "NoNewPrivs:\t2", 1), "want 0 or 1"},
		{"an empty file is rejected", "", "no Name: line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStatus(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseStat(t *testing.T) {
	tests := []struct {
		name  string
		file  string
		check func(t *testing.T, s *Stat)
	}{
		{"a comm with spaces and parentheses is split at the last ')'", "stat-odd-comm-two-threads", func(t *testing.T, s *Stat) {
			eq(t, "Pid", s.Pid, 2866)
			eq(t, "Comm", s.Comm, "a) b (c) d)")
			eq(t, "State", s.State, 'R')
			eq(t, "PPid", s.PPid, 2854)
			eq(t, "Pgrp", s.Pgrp, 2854)
			eq(t, "Session", s.Session, 2061)
			eq(t, "TtyNr", s.TtyNr, 0)
			eq(t, "Tpgid", s.Tpgid, -1)
			eq(t, "Flags", s.Flags, 4194304)
			eq(t, "Nice", s.Nice, 0)
			eq(t, "NumThreads", s.NumThreads, 2)
			eq(t, "StartTime", s.StartTime, 26387)
			eq(t, "StartCode", s.StartCode, 94907109658624)
			eq(t, "EndCode", s.EndCode, 94907109661649)
			eq(t, "StartStack", s.StartStack, 140732178599024)
			eq(t, "ExitSignal", s.ExitSignal, 17)
			eq(t, "Processor", s.Processor, 0)
			eq(t, "StartData", s.StartData, 94907109670352)
			eq(t, "EndData", s.EndData, 94907109671240)
			eq(t, "StartBrk", s.StartBrk, 94907229036544)
			eq(t, "ArgStart", s.ArgStart, 140732178602698)
			eq(t, "ArgEnd", s.ArgEnd, 140732178602717)
			eq(t, "EnvStart", s.EnvStart, 140732178602717)
			eq(t, "EnvEnd", s.EnvEnd, 140732178604018)
			eq(t, "ExitCode", s.ExitCode, 0)
		}},
		{"a non-leader thread has exit signal -1", "stat-second-thread", func(t *testing.T, s *Stat) {
			eq(t, "Pid", s.Pid, 2867)
			eq(t, "Comm", s.Comm, "cap")
			eq(t, "ExitSignal", s.ExitSignal, -1)
		}},
		{"a zombie keeps its wait status", "stat-zombie-exit7", func(t *testing.T, s *Stat) {
			eq(t, "State", s.State, 'Z')
			eq(t, "ExitCode", s.ExitCode, 7<<8)
			eq(t, "StartCode", s.StartCode, 0)
		}},
		{"a traced task is in tracing stop", "stat-traced", func(t *testing.T, s *Stat) {
			eq(t, "State", s.State, 't')
			eq(t, "PPid", s.PPid, 3284)
		}},
		{"a comm holding a newline spans two lines", "stat-newline-comm", func(t *testing.T, s *Stat) {
			eq(t, "Comm", s.Comm, "x\ny) 1 2 3 (")
			eq(t, "PPid", s.PPid, 3486)
		}},
		{"init has parent 0 and negative nice", "stat-init", func(t *testing.T, s *Stat) {
			eq(t, "Pid", s.Pid, 1)
			eq(t, "PPid", s.PPid, 0)
			eq(t, "Nice", s.Nice, -10)
			eq(t, "NumThreads", s.NumThreads, 13)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ParseStat(bytes.NewReader(testdata(t, tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, s)
		})
	}
}

func TestStatusNameEqualsStatComm(t *testing.T) {
	for _, pair := range [][2]string{
		{"status-odd-comm-two-threads", "stat-odd-comm-two-threads"},
		{"status-newline-comm", "stat-newline-comm"},
		{"status-nested-pidns-setpriv", "stat-nested-pidns-setpriv"},
	} {
		t.Run(pair[0]+" names the same task as "+pair[1], func(t *testing.T) {
			st, err := ParseStatus(bytes.NewReader(testdata(t, pair[0])))
			if err != nil {
				t.Fatal(err)
			}
			sa, err := ParseStat(bytes.NewReader(testdata(t, pair[1])))
			if err != nil {
				t.Fatal(err)
			}
			if st.Name != sa.Comm || st.Pid != sa.Pid || st.PPid != sa.PPid || st.State != sa.State {
				t.Errorf("status %q pid %d ppid %d state %c; stat %q pid %d ppid %d state %c",
					st.Name, st.Pid, st.PPid, st.State, sa.Comm, sa.Pid, sa.PPid, sa.State)
			}
		})
	}
}

func TestParseStatRejects(t *testing.T) {
	full := string(testdata(t, "stat-init"))
	tests := []struct {
		name, in, wantErr string
	}{
		{"a file without parentheses is rejected", "1 init S 0", "no (comm)"},
		{"a ')' before the '(' is rejected", "1 )init( S 0", "no (comm)"},
		{"a non-numeric pid is rejected", "x" + full, "pid"},
		{"a stat cut after 51 fields is rejected", full[:strings.LastIndexByte(strings.TrimSpace(full), ' ')], "51 fields"},
		{"a two-letter state is rejected", strings.Replace(full, ") S ", ") SS ", 1), "state"},
		{"a non-numeric field names its number", strings.Replace(full, ") S 0 0", ") S x 0", 1), "field 4"},
		{"a huge file is rejected", full + strings.Repeat(" 0", maxStat), "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStat(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseFdinfo(t *testing.T) {
	tests := []struct {
		name string
		file string
		want Fdinfo
	}{
		{"a regular file has its position and O_APPEND|O_LARGEFILE|O_RDWR", "fdinfo-regular",
			Fdinfo{Pos: 5, Flags: 0o102002, MntID: 27, Ino: 9978061}},
		{"an eventfd keeps its count lines in order", "fdinfo-eventfd",
			Fdinfo{Flags: 0o2004002, MntID: 17, Ino: 1038, Extra: []string{
				"eventfd-count:               2a", "eventfd-id: 1", "eventfd-semaphore: 0"}}},
		{"a timerfd keeps its timer lines", "fdinfo-timerfd",
			Fdinfo{Flags: 0o4002, MntID: 17, Ino: 1038, Extra: []string{
				"clockid: 1", "ticks: 0", "settime flags: 00", "it_value: (99, 999427556)", "it_interval: (1, 500)"}}},
		{"an epoll keeps its target line", "fdinfo-epoll",
			Fdinfo{Flags: 0o2, MntID: 17, Ino: 1038, Extra: []string{
				"tfd:        5 events: 80000019 data:             1234  pos:0 ino:40e sdev:10"}}},
		{"an inotify keeps its watch line", "fdinfo-inotify",
			Fdinfo{Flags: 0o4000, MntID: 17, Ino: 1038, Extra: []string{
				"inotify wd:1 ino:3c4a3 sdev:fe00000 mask:300 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:a3c4030000000000"}}},
		{"a signalfd keeps its mask line", "fdinfo-signalfd",
			Fdinfo{Flags: 0o4002, MntID: 17, Ino: 1038, Extra: []string{"sigmask:\t0000000000004200"}}},
		{"a pipe has only the header", "fdinfo-pipe", Fdinfo{Flags: 0o4000, MntID: 16, Ino: 4906}},
		{"a memfd has mount id 0", "fdinfo-memfd", Fdinfo{Flags: 0o100002, Ino: 25}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFdinfo(bytes.NewReader(testdata(t, tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if got.Pos != tt.want.Pos || got.Flags != tt.want.Flags || got.MntID != tt.want.MntID ||
				got.Ino != tt.want.Ino || !slices.Equal(got.Extra, tt.want.Extra) {
				t.Errorf("\n got %#v\nwant %#v", *got, tt.want)
			}
		})
	}
}

func TestParseFdinfoRejects(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"decimal digits beyond octal in flags are rejected", "pos:\t0\nflags:\t08\nmnt_id:\t1\n", "line 2: flags"},
		{"a negative inode is rejected", "pos:\t0\nflags:\t0\nmnt_id:\t1\nino:\t-1\n", "line 4: ino"},
		{"a missing flags line is rejected", "pos:\t0\nmnt_id:\t1\n", "no flags: line"},
		{"a missing pos line is rejected", "flags:\t0\nmnt_id:\t1\n", "no pos: line"},
		{"a missing mnt_id line is rejected", "pos:\t0\nflags:\t0\n", "no mnt_id: line"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseFdinfo(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	lims, err := ParseLimits(bytes.NewReader(testdata(t, "limits-nofile-stack-set")))
	if err != nil {
		t.Fatal(err)
	}
	const (
		rlimitCPU     = 0
		rlimitStack   = 3
		rlimitCore    = 4
		rlimitNproc   = 6
		rlimitNofile  = 7
		rlimitMemlock = 8
		rlimitNice    = 13
		rlimitRTTime  = 15
	)
	for _, tt := range []struct {
		name     string
		resource int
		want     Rlimit
	}{
		{"unlimited cpu time is RLIM_INFINITY", rlimitCPU, Rlimit{RlimInfinity, RlimInfinity}},
		{"a stack soft limit below an unlimited hard limit is kept", rlimitStack, Rlimit{12345, RlimInfinity}},
		{"a zero core size is zero", rlimitCore, Rlimit{0, RlimInfinity}},
		{"the process limit is read", rlimitNproc, Rlimit{96365, 96365}},
		{"open files differ in soft and hard", rlimitNofile, Rlimit{1000, 2000}},
		{"locked memory is in bytes", rlimitMemlock, Rlimit{8388608, 8388608}},
		{"a row without units is read", rlimitNice, Rlimit{0, 0}},
		{"the last row is RLIMIT_RTTIME", rlimitRTTime, Rlimit{RlimInfinity, RlimInfinity}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			eq(t, limitNames[tt.resource], lims[tt.resource], tt.want)
		})
	}
}

func TestParseLimitsRejects(t *testing.T) {
	full := string(testdata(t, "limits-nofile-stack-set"))
	tests := []struct {
		name, in, wantErr string
	}{
		{"a missing row is rejected", strings.Replace(full, "Max open files ", "Max shut files ", 1), `no "Max open files" row`},
		{"a repeated row is rejected", full + "Max cpu time 1 1 seconds\n", `line 18: second "Max cpu time"`},
		{"a row with one value takes the unit for the hard limit and is rejected", strings.Replace(full, "1000                 2000", "1000", 1), "line 9: Max open files hard limit"},
		{"a value that overflows is rejected", strings.Replace(full, "12345", "99999999999999999999", 1), "line 5: Max stack size soft limit"},
		{"an empty file is rejected", "", `no "Max cpu time" row`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseLimits(strings.NewReader(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseAuxv(t *testing.T) {
	b := testdata(t, "auxv-amd64")
	words, err := ParseAuxv(b)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("every word of the file is returned, AT_NULL included", func(t *testing.T) {
		eq(t, "len", len(words), len(b)/8)
		eq(t, "last pair", [2]uint64(words[len(words)-2:]), [2]uint64{0, 0})
	})
	t.Run("AT_PAGESZ and AT_SYSINFO_EHDR have their values", func(t *testing.T) {
		vals := map[uint64]uint64{}
		for i := 0; i < len(words); i += 2 {
			vals[words[i]] = words[i+1]
		}
		eq(t, "AT_PAGESZ", vals[6], 4096)
		eq(t, "AT_SYSINFO_EHDR", vals[33], 0x7fc9bdd16000) // the [vdso] of the same capture
	})
	t.Run("bytes after AT_NULL are ignored", func(t *testing.T) {
		more, err := ParseAuxv(append(slices.Clip(b), make([]byte, 32)...))
		if err != nil || !slices.Equal(more, words) {
			t.Errorf("got %d words, %v; want the %d words of the file", len(more), err, len(words))
		}
	})
	for _, tt := range []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"an empty vector is rejected", nil, "no AT_NULL"},
		{"a vector without AT_NULL is rejected", b[:len(b)-16], "offset 352: no AT_NULL"},
		{"a half pair is rejected", b[:len(b)-8], "offset 352: truncated"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseAuxv(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParsePersonality(t *testing.T) {
	t.Run("ADDR_NO_RANDOMIZE|READ_IMPLIES_EXEC reads as 0x440000", func(t *testing.T) {
		p, err := ParsePersonality(bytes.NewReader(testdata(t, "personality-addr-no-randomize-read-implies-exec")))
		eq(t, "error", err, nil)
		eq(t, "personality", p, 0x0040000|0x0400000)
	})
	t.Run("a value that is not hex is rejected", func(t *testing.T) {
		if _, err := ParsePersonality(strings.NewReader("zz\n")); err == nil || !strings.Contains(err.Error(), "personality") {
			t.Errorf("got error %v, want one naming the file", err)
		}
	})
}

func TestParseTimers(t *testing.T) {
	in := "ID: 2\nsignal: 12/0000000000000000\nnotify: signal/tid.17989\nClockID: 1\nID: 0\nsignal: 10/0000000000001234\nnotify: none/pid.17987\nClockID: 0\n"
	got, err := ParseTimers(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []PosixTimer{{ID: 2, Signo: 12, Notify: "signal", ToThread: true, Target: 17989, Clock: 1}, {ID: 0, Signo: 10, Value: 0x1234, Notify: "none", Target: 17987}}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("parsed %+v, want %+v", got, want)
	}
	for _, bad := range []string{"signal: 10/0\n", "ID: x\n", "ID: 1\nnotify: signal/who.3\n", "ID: 1\nsignal: 99/0\n"} {
		if _, err := ParseTimers(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseTimers(%q) took it", bad)
		}
	}
}
