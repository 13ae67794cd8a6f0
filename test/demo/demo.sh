#!/bin/bash
# demo.sh: a counting process is dumped (and so killed), shown to be gone,
# restored with ctcr, and counts on in the same log with the same PID.
# Run as root: sudo make demo (which builds bin/ctcr first).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
ctcr=${CTCR:-$root/bin/ctcr}
if [ "$(id -u)" != 0 ]; then
	echo "demo: run as root (sudo make demo)" >&2
	exit 1
fi
if [ ! -x "$ctcr" ]; then
	echo "demo: no $ctcr: run make build first" >&2
	exit 1
fi

work=$(mktemp -d /tmp/ctcr-demo.XXXXXX)
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

# Bold headings on a terminal only: a log or a pipe gets plain text.
if [ -t 1 ]; then
	say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	say() { printf '\n== %s\n' "$*"; }
fi

gcc -O2 -Wall -o "$work/counter" "$root/test/demo/counter.c"
"$work/counter" >"$work/counter.log" 2>&1 </dev/null &
pid=$!
sleep 2
say "PID $pid counts into $work/counter.log:"
tail -n 3 "$work/counter.log"

say "ctcr dump -t $pid -D $work/images"
# The dump kills the counter, as it should; bash would report that as
# "line N: PID Killed", which reads as an error: its job notices go to
# /dev/null while ctcr's own stderr (fd 3) stays visible. The wait reaps
# the counter: its PID must be free for the restore.
exec 3>&2
{
	"$ctcr" dump -t "$pid" -D "$work/images" --json 2>&3
	wait "$pid" || true
} 2>/dev/null
exec 3>&-
if kill -0 "$pid" 2>/dev/null; then
	echo "demo: PID $pid still runs after the dump" >&2
	exit 1
fi
say "PID $pid is gone; the images:"
ls -l "$work/images"
last=$(tail -n 1 "$work/counter.log")
sleep 1.5
say "1.5 s later the log still ends at:"
tail -n 1 "$work/counter.log"
[ "$(tail -n 1 "$work/counter.log")" = "$last" ] || { echo "demo: the log grew while the process was gone" >&2; exit 1; }

say "ctcr restore -D $work/images -d"
"$ctcr" restore -D "$work/images" -d --pidfile "$work/pid" --json
sleep 2
say "PID $(cat "$work/pid") counts on:"
tail -n 6 "$work/counter.log"
grep -qF -- "$last" "$work/counter.log"
if [ "$(tail -n 1 "$work/counter.log")" = "$last" ]; then
	echo "demo: the restored process does not count" >&2
	exit 1
fi
say "done: the counter was checkpointed, killed and restored"
