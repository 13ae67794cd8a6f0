package main

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"time"

	"github.com/checkpoint-restore/go-criu/v7/crit/images/stats"
	"google.golang.org/protobuf/proto"

	"github.com/ctcr/ctcr/criu"
	"github.com/ctcr/ctcr/criu/images"
)

// A process checkpoint records its timings as CRIU does: a stats-dump
// image (StatsEntry, a service image), written once the dump is over
// (the frozen time is known only after the tasks were let go), so
// `ctcr show` and `crit show stats-dump` print them. A container
// bundle keeps them in stats.json instead.

// statsDumpFile is CRIU's name of the image (criu/stats.c).
const statsDumpFile = "stats-dump"

// statsKind is CRIU's STATS image (criu/include/magic.h STATS_MAGIC).
var statsKind = images.Kind{Name: "STATS", File: statsDumpFile, Magic: 0x57093306, Prefix: images.PrefixService}

// writeStatsDump writes dir/stats-dump for a finished dump.
func writeStatsDump(dir string, st *criu.DumpStats) error {
	us := func(d time.Duration) *uint32 { return proto.Uint32(uint32(min(d.Microseconds(), 1<<32-1))) }
	pages := st.PagesBytes / 4096
	e := &stats.StatsEntry{Dump: &stats.DumpStatsEntry{
		FreezingTime: us(st.Total - st.Frozen), FrozenTime: us(st.Frozen),
		MemdumpTime: us(st.Memory), MemwriteTime: us(0),
		PagesScanned: proto.Uint64(pages), PagesSkippedParent: proto.Uint64(0),
		PagesWritten: proto.Uint64(pages), PagesLazy: proto.Uint64(0),
	}}
	if err := images.WriteFile(filepath.Join(dir, statsDumpFile), statsKind, e); err != nil {
		return fmt.Errorf("timings of the dump (%s): %w", filepath.Join(dir, statsDumpFile), err)
	}
	// Written after the commit (the frozen time is known only once the
	// tasks are let go): it joins the manifest so that show and restore
	// check it like the rest.
	return images.UpdateManifest(dir, statsDumpFile)
}

// readStatsDump reads dir/stats-dump, or returns nil if there is none.
func readStatsDump(dir string) (*stats.DumpStatsEntry, error) {
	var e stats.StatsEntry
	if err := images.ReadOne(filepath.Join(dir, statsDumpFile), statsKind, &e); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return e.GetDump(), nil
}
