package criurpc

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	// go-criu's stats package registers the same stats.proto as
	// crit/images/stats, which the rest of ctcr uses: importing both
	// panics at start ("name conflict over stats_entry").
	stats "github.com/checkpoint-restore/go-criu/v7/crit/images/stats"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

const pageSize = 4096

// The stats images' names and magics (CRIU's criu/include/magic.h).
const (
	statsDump       = "stats-dump"
	statsRestore    = "stats-restore"
	imgServiceMagic = 0x55105940
	statsMagic      = 0x57093306
)

// The stats images CRIU leaves in its work directory, which podman
// reads (--print-stats) and packs (--export): a service image, so no
// IMG_COMMON magic:
//
//	u32 IMG_SERVICE magic 0x55105940 | u32 STATS magic 0x57093306 |
//	u32 size | stats_entry (protobuf, size bytes)
func writeStats(workDir, name string, e *stats.StatsEntry) error {
	b, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	buf := make([]byte, 12, 12+len(b))
	binary.LittleEndian.PutUint32(buf[0:], imgServiceMagic)
	binary.LittleEndian.PutUint32(buf[4:], statsMagic)
	binary.LittleEndian.PutUint32(buf[8:], uint32(len(b)))
	buf = append(buf, b...)
	path := filepath.Join(workDir, name)
	os.Remove(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("stats image: %w", err)
	}
	if _, err := f.Write(buf); err != nil {
		f.Close()
		return fmt.Errorf("stats image %s: %w", path, err)
	}
	return f.Close()
}

func usec(d time.Duration) *uint32 {
	u := d.Microseconds()
	if u > 1<<32-1 {
		u = 1<<32 - 1
	}
	return proto.Uint32(uint32(u))
}

func writeDumpStats(workDir string, r *dumpResult) error {
	return writeStats(workDir, statsDump, &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: usec(r.freezing), FrozenTime: usec(r.frozen), MemdumpTime: usec(r.memdump), MemwriteTime: usec(r.memdump),
		PagesScanned: proto.Uint64(r.pagesWritten + r.pagesParent), PagesSkippedParent: proto.Uint64(r.pagesParent),
		PagesWritten: proto.Uint64(r.pagesWritten), PagesLazy: proto.Uint64(0),
	}})
}

func writeRestoreStats(workDir string, forking, total time.Duration, pages uint64) error {
	return writeStats(workDir, statsRestore, &stats.StatsEntry{Restore: &stats.RestoreStatsEntry{
		PagesCompared: proto.Uint64(0), PagesSkippedCow: proto.Uint64(0), ForkingTime: usec(forking),
		RestoreTime: usec(total), PagesRestored: proto.Uint64(pages),
	}})
}
