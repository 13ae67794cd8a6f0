package test

import (
	"testing"
)

// TestRestoreSparse restores a reservation of which only 8 pages were
// written: the restore fills memory in bulk (MADV_POPULATE_WRITE before
// each read), and must populate only the runs the image holds, not the
// mappings around them. The workload counts its resident pages with
// mincore and fails if the reservation holds more than its 8 pages.
//
// The 16 GiB case is bigger than this machine's free memory could hold
// if it were populated (a populate of it ends in the OOM killer); the
// 512 MiB case fails cleanly when the restore populates too much. The
// 1 TiB one maps again only with MAP_NORESERVE (smaps' "nr", kept in the
// VMA's flags): without it the remote mmap gets ENOMEM under overcommit
// heuristics.
func TestRestoreSparse(t *testing.T) {
	for _, c := range []struct{ name, mib string }{
		{"512 MiB reservation with 8 written pages keeps 8 pages in memory", "512"},
		{"16 GiB reservation with 8 written pages keeps 8 pages in memory", "16384"},
		{"1 TiB MAP_NORESERVE reservation with 8 written pages restores", "1048576"},
	} {
		t.Run(c.name, func(t *testing.T) {
			runScenario(t, scenario{
				workload:      "sparse",
				args:          []string{c.mib},
				detached:      true,
				json:          true,
				minPagesBytes: 8 << 12,
			}, func(w *workload, img string) *dumpReport {
				return dump(t, w, img, true, 8<<12)
			})
		})
	}
}
