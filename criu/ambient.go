package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/criu/images"
)

// ambientFile keeps the ambient capabilities of each thread that has
// any, by its id in the images: CRIU's creds_entry has no field for
// them.
//
//	{"ambient": {"TID": mask}}
const ambientFile = "caps.json"

type ambientImage struct {
	Ambient map[string]uint64 `json:"ambient"`
}

// writeAmbient writes caps.json for the threads of procs that have
// ambient capabilities, if any has.
func writeAmbient(dir string, procs []*dumpProc) error {
	img := ambientImage{Ambient: map[string]uint64{}}
	for _, p := range procs {
		for _, th := range p.threads {
			if th.ambient != 0 {
				img.Ambient[strconv.Itoa(th.vtid)] = th.ambient
			}
		}
	}
	if len(img.Ambient) == 0 {
		return nil
	}
	b, err := json.Marshal(img)
	if err != nil {
		return err
	}
	if err := images.WriteNewFile(filepath.Join(dir, ambientFile), b); err != nil {
		return fmt.Errorf("write %s: %w", ambientFile, err)
	}
	return nil
}

// readAmbient reads caps.json; a checkpoint without one has no ambient
// capabilities.
func readAmbient(dir string) (map[int]uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, ambientFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var img ambientImage
	if err := json.Unmarshal(b, &img); err != nil {
		return nil, corruptf(ambientFile, "%v", err)
	}
	out := map[int]uint64{}
	for k, v := range img.Ambient {
		tid, err := strconv.Atoi(k)
		if err != nil || tid <= 0 {
			return nil, corruptf(ambientFile, "thread id %q", k)
		}
		out[tid] = v
	}
	return out, nil
}

// raiseAmbient adds to b the raise of each capability of mask to the
// ambient set. It must follow the capset that puts them in the
// permitted and inheritable sets.
func raiseAmbient(b *batch, what map[int]string, mask uint64) {
	for capNo := uint64(0); capNo < 64; capNo++ {
		if mask&(1<<capNo) != 0 {
			what[b.add(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, capNo, 0, 0)] = fmt.Sprintf("raise ambient capability %d", capNo)
		}
	}
}
