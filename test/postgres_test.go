package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// postgresBin is Debian's PostgreSQL 15 server (package postgresql-15).
const postgresBin = "/usr/lib/postgresql/15/bin"

// TestContainerPostgres: a PostgreSQL 15 server (postmaster, checkpointer,
// background writer, WAL writer, autovacuum and replication launchers:
// SysV shared memory for its interlock, a shared anonymous mapping for
// its buffers, semaphores in it, unix and UDP sockets) runs in a runc
// container with the host's /usr and /lib bound read-only and its data
// directory bound from the host. 100,000 rows written before the
// checkpoint are read after restore, new rows are written, and the
// server still shuts down cleanly. Its buffers are shared anonymous
// memory the backends filled and exited: before the dump read the
// shared object itself, every new backend found zero pages there.
func TestContainerPostgres(t *testing.T) {
	if _, err := os.Stat(filepath.Join(postgresBin, "postgres")); err != nil {
		t.Skipf("%s/postgres is missing (apt-get install postgresql-15): %v", postgresBin, err)
	}
	data := t.TempDir()
	if err := os.Chown(data, 101, 104); err != nil {
		t.Fatal(err)
	}
	script := `mkdir -p /data/pg && chown 101:104 /data/pg
/bin/su -s /bin/sh postgres -c '` + postgresBin + `/initdb -D /pgdata/db -A trust > /data/pg/initdb.log 2>&1 && exec ` + postgresBin + `/postgres -D /pgdata/db -k /data/pg -c listen_addresses= > /data/pg/pg.log 2>&1' &
` + containerScript
	c := newContainer(t, "postgres", func(s *specs.Spec) {
		s.Process.Args = []string{"sh", "-c", script}
		// su and chown need them; runc's default spec has few.
		for _, cp := range []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_SETUID", "CAP_SETGID"} {
			caps := s.Process.Capabilities
			caps.Bounding = append(caps.Bounding, cp)
			caps.Effective = append(caps.Effective, cp)
			caps.Permitted = append(caps.Permitted, cp)
		}
		for _, d := range []string{"/usr", "/lib", "/lib64"} {
			s.Mounts = append(s.Mounts, specs.Mount{Destination: d, Type: "bind", Source: d, Options: []string{"rbind", "ro"}})
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: "/pgdata", Type: "bind", Source: data, Options: []string{"rbind", "rw"}})
	})
	for name, content := range map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\npostgres:x:101:104::/data/pg:/bin/sh\n",
		"etc/group":  "root:x:0:\npostgres:x:104:\n",
	} {
		if err := os.WriteFile(filepath.Join(c.rootfs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	c.start()
	psql := func(sql string) string {
		t.Helper()
		var out string
		var err error
		for end := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			out, err = c.exec(`/bin/su -s /bin/sh postgres -c "` + postgresBin + `/psql -h /data/pg -d postgres -Atc \"` + sql + `\""`)
			if err == nil || time.Now().After(end) {
				break
			}
		}
		if err != nil {
			log, _ := c.exec("cat /data/pg/initdb.log /data/pg/pg.log")
			t.Fatalf("%v\n%s", err, log)
		}
		return strings.TrimSpace(out)
	}
	psql("create table t(i int, s text); insert into t select g, md5(g::text) from generate_series(1, 100000) g")
	const want = "100000|5000050000"
	if got := psql("select count(*), sum(i) from t"); got != want {
		t.Fatalf("before the checkpoint: %q, want %q", got, want)
	}
	// Each psql has its own backend, which exits after it: the
	// checkpoint must not meet one whose client is gone half-way.
	waitNoBackends(t, c)
	dir := filepath.Join(t.TempDir(), "ck")
	checkpointContainer(t, c, dir)
	restoreContainer(t, c, dir)
	c.assertCounting(t, "after restore")
	if got := psql("select count(*), sum(i) from t"); got != want {
		t.Errorf("after restore: %q, want %q", got, want)
	}
	if got := psql("insert into t values (0, 'after'); select count(*) from t"); got != "INSERT 0 1\n100001" {
		t.Errorf("insert after restore: %q, want INSERT 0 1 and a count of 100001", got)
	}
	if out, err := c.exec("/bin/su -s /bin/sh postgres -c '" + postgresBin + "/pg_ctl -D /pgdata/db stop -m fast -w'"); err != nil || !strings.Contains(out, "server stopped") {
		log, _ := c.exec("cat /data/pg/pg.log")
		t.Errorf("pg_ctl stop after restore: %v\n%s\n%s", err, out, log)
	}
}

// waitNoBackends waits up to 10 s until no backend of a client
// connection (its title ends in "[local]") runs in the container.
func waitNoBackends(t *testing.T, c *runcContainer) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		out, err := c.exec("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
		if err == nil && !strings.Contains(out, "[local]") {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("client backends still run after 10 s: %q (%v)", out, err)
		}
	}
}
