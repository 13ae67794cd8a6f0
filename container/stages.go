package container

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ctcr/ctcr/cgroup"
)

// vzctl splits a checkpoint into stages that wrapper scripts call one by
// one: suspend (freeze), dump (of a suspended container, which stays
// suspended), kill, resume (thaw); and a restore into undump (restore,
// left suspended) and resume.

// Stage names one of them.
type Stage string

const (
	StageSuspend Stage = "suspend"
	StageDump    Stage = "dump"
	StageKill    Stage = "kill"
	StageResume  Stage = "resume"
	StageUndump  Stage = "undump"
)

// cgroupsOf resolves a running container to its cgroups.
func cgroupsOf(id string, pid int) (*Container, *cgroup.Set, error) {
	c, err := Resolve(id, pid)
	if err != nil {
		return nil, nil, err
	}
	cg, err := containerCgroups(c)
	if err != nil {
		return nil, nil, err
	}
	return c, cg, nil
}

// withCgroups runs fn on the cgroups of running container id, holding
// its lock.
func withCgroups(id string, pid int, fn func(cg *cgroup.Set) error) error {
	// Found before locking, so that an unknown id leaves no lock file.
	if _, err := Resolve(id, pid); err != nil {
		return err
	}
	unlock, err := Lock(id, false)
	if err != nil {
		return err
	}
	defer unlock()
	_, cg, err := cgroupsOf(id, pid)
	if err != nil {
		return err
	}
	return attempted(fn(cg))
}

// Suspend freezes the container, with none of its tasks waiting in
// vfork: the dump stage can seize them all.
func Suspend(id string, pid int) error {
	return withCgroups(id, pid, func(cg *cgroup.Set) error { return freeze(cg, 10*time.Second, func(string, ...any) {}) })
}

// Resume thaws the container (after Suspend, a --dump, or an undump).
func Resume(id string, pid int) error {
	return withCgroups(id, pid, func(cg *cgroup.Set) error { return cg.Thaw() })
}

// KillTasks kills every task of the container and waits, up to 10 s, until
// its cgroup is empty.
func KillTasks(id string, pid int) error {
	return withCgroups(id, pid, func(cg *cgroup.Set) error {
		pids, err := cg.Tasks()
		if err != nil {
			return err
		}
		for _, p := range pids {
			unix.Kill(p, unix.SIGKILL)
		}
		// Frozen tasks die only once thawed.
		cg.Thaw()
		deadline := time.Now().Add(10 * time.Second)
		for {
			left, err := cg.Tasks()
			if err != nil || len(left) == 0 {
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("container %s: %d tasks still alive 10 s after SIGKILL", id, len(left))
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// frozen reports whether the container's freezer says FROZEN.
func frozen(cg *cgroup.Set) bool {
	b, err := os.ReadFile(cg.FreezerPath())
	if err != nil {
		return false
	}
	s := string(b)
	return s == "FROZEN\n" || s == "1\n"
}
