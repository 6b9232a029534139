#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Spindle's main job, end to end: builds, starts spindled on private
# sockets, runs spindle-example (an app on libspindle emitting track
# events), records 3 s of it with the spindle CLI into a Perfetto trace,
# stops everything and says where the trace is.
#
#   scripts/demo.sh              the demo (trace in build/demo/demo.pftrace,
#                                or $SPN_DEMO_OUT/demo.pftrace)
#   scripts/demo.sh --smb-bench  the SMB benchmark instead (build/bin/smb_bench;
#                                extra arguments are passed on)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
spn_build

if [ "${1:-}" = "--smb-bench" ]; then
  shift
  exec "$SPN_BUILD/bin/smb_bench" "$@"
fi

out_dir=${SPN_DEMO_OUT:-$SPN_BUILD/demo}
trace=$out_dir/demo.pftrace
tmp=$(mktemp -d /tmp/spindle-demo.XXXXXX)
svc_pid=""
ex_pid=""

# Stops what is still running (SIGTERM, then wait), shows the logs if the
# demo failed, removes the socket dir. Runs on every exit.
cleanup() {
  local rc=$?
  if [ -n "$ex_pid" ]; then
    kill -TERM "$ex_pid" 2>/dev/null || true
    wait "$ex_pid" 2>/dev/null || true
  fi
  if [ -n "$svc_pid" ]; then
    kill -TERM "$svc_pid" 2>/dev/null || true
    wait "$svc_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "demo: failed (exit $rc)" >&2
    for f in "$tmp"/*.log; do
      [ -f "$f" ] || continue
      echo "--- $(basename "$f") (last lines)" >&2
      tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

psock=$tmp/producer.sock
csock=$tmp/consumer.sock
mkdir -p "$out_dir"
rm -f "$trace"

echo "demo: starting spindled on $tmp"
"$SPN_BUILD/bin/spindled" --producer-socket "$psock" --consumer-socket "$csock" \
  --log-level warn >"$tmp/spindled.log" 2>&1 &
svc_pid=$!
for _ in $(seq 100); do
  [ -S "$psock" ] && [ -S "$csock" ] && break
  kill -0 "$svc_pid" 2>/dev/null || { echo "demo: spindled exited" >&2; exit 1; }
  sleep 0.05
done
[ -S "$csock" ] || { echo "demo: spindled did not create its sockets" >&2; exit 1; }

echo "demo: starting spindle-example (3 worker threads and an io thread)"
"$SPN_BUILD/bin/spindle-example" --producer-socket "$psock" >"$tmp/example.log" 2>&1 &
ex_pid=$!
sleep 0.5
kill -0 "$ex_pid" 2>/dev/null || { echo "demo: spindle-example exited" >&2; exit 1; }

echo "demo: recording 3 s of track_event"
"$SPN_BUILD/bin/spindle" -t 3s -b 32mb -o "$trace" track_event \
  --consumer-socket "$csock" >"$tmp/spindle.log" 2>&1

echo "demo: stopping spindle-example and spindled"
kill -TERM "$ex_pid"
wait "$ex_pid"
ex_pid=""
kill -TERM "$svc_pid"
wait "$svc_pid"
svc_pid=""

[ -s "$trace" ] || { echo "demo: no trace was written" >&2; exit 1; }
echo
tail -n 1 "$tmp/spindle.log"
echo "trace: $trace"
echo "Open it in https://ui.perfetto.dev (Open trace file) to see the slices, counters and flows."
