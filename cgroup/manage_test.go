package cgroup

import (
	"errors"
	"testing"
)

func TestCheckPathRefusesWhatLeavesTheHierarchy(t *testing.T) {
	for _, c := range []struct {
		path string
		ok   bool
	}{
		{"/", true},
		{"/a", true},
		{"/a/b.c/d-e", true},
		{"/a/..b", true}, // a name, not a step up
		{"", false},
		{"a/b", false},
		{"/..", false},
		{"/a/../b", false},
		{"/a/./b", false},
		{"/a//b", false},
		{"/a/", false},
		{"/a\x00b", false},
	} {
		err := CheckPath(c.path)
		if c.ok && err != nil {
			t.Errorf("CheckPath(%q) = %v, want nil", c.path, err)
		}
		if !c.ok && !errors.Is(err, ErrBadPath) {
			t.Errorf("CheckPath(%q) = %v, want ErrBadPath", c.path, err)
		}
	}
}

func TestRootsParseControllerAndDefault(t *testing.T) {
	var r Roots
	for _, s := range []string{"memory:/m", "name=systemd:/s", "/all"} {
		if err := r.Set(s); err != nil {
			t.Fatalf("Set(%q): %v", s, err)
		}
	}
	for key, want := range map[string]string{"memory": "/m", "name=systemd": "/s", "pids": "/all", Unified: "/all"} {
		if got, ok := r.Of(key); !ok || got != want {
			t.Errorf("Of(%q) = %q, %v; want %q", key, got, ok, want)
		}
	}
	for _, bad := range []string{"memory:/m", "cpu:rel", "cpu:/a/../b", "a/b:/x", "relative"} {
		if err := r.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
	var none Roots
	if _, ok := none.Of("memory"); ok {
		t.Errorf("an empty Roots gives a root")
	}
}

func TestModeNames(t *testing.T) {
	for i, n := range modeNames {
		var m Mode
		if err := m.Set(n); err != nil || int(m) != i || m.String() != n {
			t.Errorf("Set(%q) = %v, %v", n, m, err)
		}
	}
	var m Mode
	if err := m.Set("soft "); err == nil {
		t.Errorf("Set accepted %q", "soft ")
	}
	if !ModeSoft.Creates() || !ModeStrict.Creates() || ModeProps.Creates() || ModeNone.Creates() {
		t.Errorf("Creates: soft/full/strict make cgroups, none/props do not")
	}
}

func TestOnlyTableProperties(t *testing.T) {
	for _, c := range []struct {
		key, name string
		ok        bool
	}{
		{"memory", "memory.limit_in_bytes", true},
		{"pids", "pids.max", true},
		{"cpu,cpuacct", "cpu.shares", true},
		{Unified, "pids.max", true},
		{Unified, "cgroup.type", true},
		{"memory", "cgroup.procs", false},
		{"memory", "release_agent", false},
		{"memory", "notify_on_release", false},
		{"devices", "devices.list", false},
		{"name=systemd", "tasks", false},
		{Unified, "cgroup.procs", false},
		{Unified, "../x", false},
	} {
		if got := KnownProp(c.key, c.name); got != c.ok {
			t.Errorf("KnownProp(%q, %q) = %v, want %v", c.key, c.name, got, c.ok)
		}
	}
	if err := WriteProps("memory", "/nonexistent", []Prop{{"release_agent", "/bin/sh"}}); err == nil {
		t.Errorf("WriteProps wrote release_agent")
	}
}
