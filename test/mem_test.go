package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Memory states of issue 10, one workload each: each sets up its
// mappings, is dumped and restored, and checks them itself.

// TestUnreadableMappings dumps mappings whose protection forbids reading
// (PROT_NONE, write-only, exec-only, a guard page): their pages must be
// read all the same and come back with the protection they had.
func TestUnreadableMappings(t *testing.T) {
	t.Run("PROT_NONE, write-only and exec-only mappings keep their content and protection", func(t *testing.T) {
		dumpRestoreWorkload(t, "memprot")
	})
	t.Run("the memprot workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "memprot").checkPasses(30*time.Second, "memprot")
	})
}

// TestMadviseAndDevZero dumps a mapping per madvise flag smaps shows and
// a private mapping of /dev/zero: each flag, and the /dev/zero name, must
// be there after restore, and WIPEONFORK/DONTFORK must still act on fork.
func TestMadviseAndDevZero(t *testing.T) {
	t.Run("madvise flags and a private /dev/zero mapping are kept", func(t *testing.T) {
		dumpRestoreWorkload(t, "madvise")
	})
	t.Run("the madvise workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "madvise").checkPasses(30*time.Second, "madvise")
	})
}

// TestExecRestoredMemfd executes a restored memfd holding busybox through
// the fd memfd_create gave and a read-only one: no writer ctcr or the
// restore made may make execveat fail with ETXTBSY.
func TestExecRestoredMemfd(t *testing.T) {
	t.Run("a restored memfd can be executed through its fds", func(t *testing.T) {
		dumpRestoreWorkload(t, "memfdexec")
	})
	t.Run("the memfdexec workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "memfdexec").checkPasses(30*time.Second, "memfdexec")
	})
}

// TestMprotectRestoredSharedFileMapping dumps read-only MAP_SHARED
// mappings of a file opened O_RDWR and of one opened O_RDONLY: after
// restore mprotect(PROT_WRITE) must work on the first, as before the
// dump, and still be refused on the second.
func TestMprotectRestoredSharedFileMapping(t *testing.T) {
	t.Run("a shared file mapping keeps the rights its file was opened with", func(t *testing.T) {
		dumpRestoreWorkload(t, "mapshrw")
	})
	t.Run("the mapshrw workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "mapshrw").checkPasses(30*time.Second, "mapshrw")
	})
}

// TestHugetlb dumps hugetlb memory of each kind (private and shared
// MAP_HUGETLB mappings, a MFD_HUGETLB memfd mapped shared, a private one
// a forked child shares): each must come back hugetlb, at its address,
// with its data. It reserves a few
// huge pages (vm.nr_hugepages) and gives them back.
func TestHugetlb(t *testing.T) {
	needCtcr(t)
	reserveHugePages(t, 6)
	for _, kind := range []string{"private", "shared", "memfd", "fork"} {
		name := "a " + kind + " hugetlb mapping keeps its huge pages and data"
		if kind == "fork" {
			name = "a private hugetlb mapping a forked child shares keeps its data in both"
		}
		t.Run(name, func(t *testing.T) {
			dumpRestoreWorkload(t, "hugetlb", kind)
		})
	}
	t.Run("the hugetlb workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "hugetlb", "memfd").checkPasses(30*time.Second, "hugetlb")
	})
	t.Run("a restore without free huge pages fails naming the mapping and the pages it needs", func(t *testing.T) {
		w := startWorkload(t, "hugetlb", "private")
		img := filepath.Join(t.TempDir(), "img")
		dump(t, w, img, false, 0)
		w.reapDumped(t)
		// No huge page left free (TestHugetlb's cleanup gives the knob
		// its value back).
		setHugePages(t, 0)
		r := runCtcr(t, 60*time.Second, "restore", "-D", img)
		stderr := r.stderr()
		if r.code() != 1 || !strings.Contains(stderr, "hugetlb mapping") || !strings.Contains(stderr, "needs 2 free huge pages") {
			t.Errorf("%s: exit status %d, stderr %q; want 1 and the hugetlb mapping with the huge pages it needs", r, r.code(), stderr)
		}
	})
}

// setHugePages sets vm.nr_hugepages.
func setHugePages(t *testing.T, n int) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/nr_hugepages", []byte(strconv.Itoa(n)), 0); err != nil {
		t.Fatal(err)
	}
}

// reserveHugePages makes n more huge pages of the default size free,
// raising vm.nr_hugepages, and lowers it again when the test ends. It
// skips the test when the kernel cannot find them.
func reserveHugePages(t *testing.T, n int) {
	t.Helper()
	const knob = "/proc/sys/vm/nr_hugepages"
	b, err := os.ReadFile(knob)
	if err != nil {
		t.Skipf("no hugetlb: %v", err)
	}
	before, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %q: %v", knob, b, err)
	}
	want := before + n
	if err := os.WriteFile(knob, []byte(strconv.Itoa(want)), 0); err != nil {
		t.Skipf("cannot reserve huge pages: %v", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(knob, []byte(strconv.Itoa(before)), 0); err != nil {
			t.Errorf("give back the huge pages: %s: %v", knob, err)
		}
	})
	b, _ = os.ReadFile(knob)
	if got, _ := strconv.Atoi(strings.TrimSpace(string(b))); got < want {
		t.Skipf("the kernel found %d of the %d huge pages asked for (memory too fragmented)", got, want)
	}
}

// TestAioRing dumps a native AIO context holding completed events the
// task has not reaped: after restore the context is at its address and
// io_getevents returns those events, also when they wrap around the end
// of the ring, when a request was in flight at the dump (which is lost:
// no interface shows it), and when a forked child maps the ring too.
func TestAioRing(t *testing.T) {
	for _, mode := range []string{"", "wrap", "inflight", "fork"} {
		name := "an AIO context keeps its unreaped events"
		switch mode {
		case "wrap":
			name += " when they wrap around the ring"
		case "inflight":
			name += " when a poll was still in flight"
		case "fork":
			name += " and a forked child still maps the ring"
		}
		t.Run(name, func(t *testing.T) {
			var args []string
			if mode != "" {
				args = append(args, mode)
			}
			dumpRestoreWorkload(t, "aio", args...)
		})
	}
	t.Run("the aio workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "aio", "wrap").checkPasses(30*time.Second, "aio")
	})
}

// TestMemfdPrivateMappingSizes dumps private mappings of memfds that
// grew, shrank, were written through the fd after mmap, or are all
// holes, with their first page written by the mapping or not: every page
// must read what it read before.
func TestMemfdPrivateMappingSizes(t *testing.T) {
	t.Run("private memfd mappings keep every page across size changes of their memfd", func(t *testing.T) {
		dumpRestoreWorkload(t, "memfdsize")
	})
	t.Run("the memfdsize workload passes when it is never dumped", func(t *testing.T) {
		startWorkload(t, "memfdsize").checkPasses(30*time.Second, "memfdsize")
	})
}
