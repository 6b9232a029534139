#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs every benchmark (smb_bench, ipc_bench, tbuf_bench, commit_bench,
# tw_bench, sdk_bench) and the spindle-loadgen scenarios against a private
# spindled, then writes bench/results/summary.json (one entry per benchmark
# with its headline figures and the core count) and bench/results/summary.md
# (a markdown table), and refreshes README.md's "Latest benchmark figures".
#
#   bench/run_all.sh [--quick] [--no-build] [--no-readme]
#
#   --quick      shorter runs (fewer samples, 1 s scenarios): a smoke test
#   --no-build   use the binaries already in $SPN_BUILD/bin
#   --no-readme  leave README.md alone
#
# Build dir: $SPN_BUILD (default build/). Each benchmark writes its own
# bench/results/<name>.json; the loadgen scenarios write
# bench/results/loadgen_<scenario>.json. Exits non-zero when a benchmark
# failed (a loadgen scenario that lost events is a figure, not a failure).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SPN_BUILD:-$root/build}
results=$root/bench/results
quick=0
do_build=1
do_readme=1
for a in "$@"; do
  case $a in
    --quick) quick=1 ;;
    --no-build) do_build=0 ;;
    --no-readme) do_readme=0 ;;
    -h|--help) sed -n '3,19p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run_all.sh: unknown argument $a (see --help)" >&2; exit 2 ;;
  esac
done
command -v python3 >/dev/null ||
  { echo "run_all.sh: python3 is needed for the summary (apt-get install python3-minimal)" >&2; exit 1; }

benches=(smb_bench ipc_bench tbuf_bench commit_bench tw_bench sdk_bench)
if [ $do_build = 1 ]; then
  [ -f "$build/CMakeCache.txt" ] || cmake -S "$root" -B "$build" >/dev/null
  cmake --build "$build" -j "$(nproc)" --target "${benches[@]}" spindled spindle_loadgen \
    -- --no-print-directory >/dev/null
fi
mkdir -p "$results"
tmp=$(mktemp -d /tmp/spindle-bench.XXXXXX)
svc_pid=""
cleanup() {
  if [ -n "$svc_pid" ]; then
    kill -TERM "$svc_pid" 2>/dev/null || true
    wait "$svc_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# status file: one "name<TAB>status<TAB>seconds<TAB>json" line per run
status=$tmp/status.tsv
: >"$status"
failed=0

# run NAME JSON CMD...: runs one benchmark, its output on the terminal
run() {
  local name=$1 json=$2 t0 ms rc=0 st
  shift 2
  echo "== $name: ${*#"$build/bin/"}"
  t0=$(date +%s%N)
  "$@" || rc=$?
  case $rc in
    0) st=ok ;;
    1) [[ $name == loadgen_* ]] && st=lost_events || st="failed (exit 1)" ;;
    *) st="failed (exit $rc)" ;;
  esac
  [[ $st == failed* ]] && failed=1
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%s\t%d.%03d\t%s\n' "$name" "$st" $((ms / 1000)) $((ms % 1000)) "$json" \
    >>"$status"
  echo
}

# ---- the benchmarks ----
bin=$build/bin
if [ $quick = 1 ]; then
  run smb_bench "$results/smb_bench.json" "$bin/smb_bench" 100
  run ipc_bench "$results/ipc_bench.json" "$bin/ipc_bench"
  run tbuf_bench "$results/tbuf_bench.json" "$bin/tbuf_bench" 100
  run commit_bench "$results/commit_bench.json" "$bin/commit_bench" --seconds 0.5
  run commit_bench_prebuilt "$results/commit_bench_prebuilt.json" "$bin/commit_bench" \
    --seconds 0.5 --producers 1 --prebuilt --batch 32
  run tw_bench "$results/tw_bench.json" "$bin/tw_bench" 20000
  run sdk_bench "$results/sdk_bench.json" "$bin/sdk_bench" 20000
  run sdk_bench_drain1000 "$results/sdk_bench_drain1000.json" "$bin/sdk_bench" 20000 \
    --drain-us 1000
else
  for b in "${benches[@]}"; do
    run "$b" "$results/$b.json" "$bin/$b"
  done
  # One lane fed by one producer copying prebuilt chunks: the lane's
  # capacity (MB moved per service CPU second) against memcpy.
  run commit_bench_prebuilt "$results/commit_bench_prebuilt.json" "$bin/commit_bench" \
    --producers 1 --prebuilt --batch 32
  # The SDK with its I/O thread's real cadence (one drain per commit period).
  run sdk_bench_drain1000 "$results/sdk_bench_drain1000.json" "$bin/sdk_bench" \
    --drain-us 1000
fi

# ---- spindle-loadgen scenarios against a private spindled ----
"$bin/spindled" --producer-socket "$tmp/p.sock" --consumer-socket "$tmp/c.sock" \
  --log-level warn 2>"$tmp/spindled.log" &
svc_pid=$!
for _ in $(seq 100); do [ -S "$tmp/c.sock" ] && break; sleep 0.05; done
lg=("$bin/spindle-loadgen" --producer-socket "$tmp/p.sock" --consumer-socket "$tmp/c.sock"
    --service-pid "$svc_pid")
d=3s; dflat=1s
[ $quick = 1 ] && { d=1s; dflat=300ms; }
# scenario NAME ARGS...
scenario() {
  local name=$1
  shift
  run "loadgen_$name" "$results/loadgen_$name.json" "${lg[@]}" --json \
    "$results/loadgen_$name.json" "$@"
}
# Flat out with the default SMB, into a buffer big enough to keep it all:
# what is lost is lost on the way (SMB full), not overwritten.
scenario flat_1t --threads 1 --rate max --duration "$dflat" --buffer 1gb
scenario flat_2t --threads 2 --rate max --duration "$dflat" --buffer 1gb
scenario 8x4_rate --producers 8 --threads 4 --rate 10k/s --duration "$d" --buffer 512mb
scenario 1000t_low --threads 1000 --rate 10/s --duration "$d"
kill -TERM "$svc_pid" 2>/dev/null || true
wait "$svc_pid" 2>/dev/null || true
svc_pid=""

# ---- summary.json, summary.md, README ----
python3 - "$root" "$status" "$do_readme" <<'PY'
import json, os, platform, subprocess, sys, time

root, status_path, do_readme = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
results = os.path.join(root, "bench", "results")

# Headline figures: (match, fields, label) per benchmark; a match that
# finds nothing falls back to the first results as they are.
HEAD = {
    "smb_bench": [
        ({"case": "state", "threads": 1, "layout": "div4"}, ["cycles_per_s", "ratio_vs_memcpy4k"],
         "chunk acquire/complete/read/free cycles, 1 thread, 1 KiB chunks"),
        ({"case": "payload", "threads": 1, "layout": "div4"}, ["cycles_per_s", "ratio_vs_memcpy4k"],
         "the same with the payload written and copied out"),
        ({"case": "state", "threads": 2, "layout": "div4"}, ["cycles_per_s", "ratio_vs_memcpy4k"],
         "chunk cycles, 2 threads"),
    ],
    "ipc_bench": [
        ({"case": "ipc_round_trip"}, ["ops_per_s", "baseline_ops_per_s"], "request/reply round trips"),
        ({"case": "ipc_round_trip_32_in_flight"}, ["ops_per_s"], "round trips, 32 in flight"),
        ({"case": "ipc_streamed_replies"}, ["mb_per_s", "baseline_mb_per_s"], "streamed replies"),
    ],
    "tbuf_bench": [
        ({"case": "commit", "threads": 1, "chunk_bytes": 4080}, ["mb_per_s_per_thread", "ratio"],
         "trace buffer commit of 4 KiB chunks, 1 lane"),
        ({"case": "commit", "threads": 2, "chunk_bytes": 4080}, ["mb_per_s_per_thread", "ratio"],
         "the same, 2 lanes"),
        ({"case": "read"}, ["mb_per_s", "packets_per_s"], "trace buffer read"),
    ],
    "commit_bench": [
        ({"lanes": 1}, ["mb_per_s", "ratio", "service_cpu_s_per_gb", "lost_chunks"],
         "SMB chunks committed into spindled, 1 lane"),
        ({"lanes": 2}, ["mb_per_s", "ratio", "service_cpu_s_per_gb", "lost_chunks"],
         "the same, 2 lanes"),
    ],
    "commit_bench_prebuilt": [
        ({"lanes": 1}, ["mb_per_s", "ratio", "lane_capacity_ratio", "service_cpu_pct",
                        "lost_chunks"],
         "1 lane fed by one producer of prebuilt chunks (the lane's capacity: "
         "MB per service CPU second)"),
    ],
    "tw_bench": [
        ({"case": "small", "threads": 1}, ["mean_ns_untimed", "p50_ns", "p99_ns", "p999_ns"],
         "trace writer, small packet, 1 thread"),
        ({"case": "small", "threads": 2}, ["mean_ns_untimed", "p50_ns", "p99_ns", "p999_ns"],
         "the same, 2 threads"),
        ({"case": "1k", "threads": 1}, ["mean_ns_untimed", "p50_ns", "p99_ns", "p999_ns"],
         "trace writer, 1 KiB packet, 1 thread"),
    ],
    "sdk_bench": [
        ({"case": "tsc", "threads": 0}, ["median_ns"], "bare TSC read"),
        ({"case": "disabled", "threads": 1}, ["median_ns", "mean_ns"],
         "track event, category disabled"),
        ({"case": "slice", "threads": 1},
         ["median_ns", "median_over_tsc", "p99_ns", "p999_ns", "mean_ns"],
         "track event slice begin/end, 1 thread"),
        ({"case": "slice", "threads": 2},
         ["median_ns", "median_over_tsc", "p99_ns", "p999_ns", "two_over_one_thread"],
         "the same, 2 threads"),
        ({"case": "counter", "threads": 1}, ["median_ns", "p99_ns", "p999_ns", "mean_ns"],
         "track event counter"),
        ({"case": "args2", "threads": 1}, ["median_ns", "p99_ns", "p999_ns", "mean_ns"],
         "track event instant, 2 annotations"),
        ({"case": "raw1k", "threads": 1}, ["median_ns", "p99_ns", "p999_ns", "mean_ns"],
         "raw 1 KiB packet"),
    ],
    "sdk_bench_drain1000": [
        ({"case": "slice", "threads": 1},
         ["median_ns", "p99_ns", "p999_ns", "chunk_change_median_ns", "other_p999_ns"],
         "slice begin/end, 1 thread, drained once per 1 ms commit period"),
        ({"case": "slice", "threads": 2},
         ["median_ns", "p99_ns", "p999_ns", "chunk_change_median_ns", "other_p999_ns"],
         "the same, 2 threads"),
    ],
}
LOADGEN = {
    "loadgen_flat_1t": "loadgen: 1 thread flat out, default SMB",
    "loadgen_flat_2t": "loadgen: 2 threads flat out, default SMB",
    "loadgen_8x4_rate": "loadgen: 8 processes x 4 threads at 10k/s each",
    "loadgen_1000t_low": "loadgen: 1000 threads at 10/s, default SMB",
}
LG_FIELDS = ["events_per_s", "loss_pct", "ns_p50", "ns_p99", "ns_p999", "mb_per_s",
             "service_cpu_pct", "sdk_dropped"]
UNITS = {"cycles_per_s": "/s", "ops_per_s": "/s", "baseline_ops_per_s": "/s (baseline)",
         "packets_per_s": " packets/s", "events_per_s": " events/s", "mb_per_s": " MB/s",
         "baseline_mb_per_s": " MB/s (baseline)", "mb_per_s_per_thread": " MB/s per thread",
         "service_cpu_s_per_gb": " service CPU s/GB", "service_cpu_s": " service CPU s",
         "lost_chunks": " chunks lost", "sdk_dropped": " SDK drops", "loss_pct": "% lost",
         "ratio": "x memcpy", "lane_capacity_ratio": "x memcpy per service CPU second",
         "ratio_vs_memcpy4k": "x memcpy 4 KiB",
         "median_over_tsc": "x the TSC read", "two_over_one_thread": "x 1 thread"}

def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def fmt(k, v):
    if v is None:
        return None
    if k.endswith("_ns") or k.startswith("ns_") or k == "mean_ns_untimed":
        name = {"mean_ns_untimed": "mean", "mean_ns": "mean",
                "chunk_change_median_ns": "chunk change median",
                "other_p999_ns": "p999 of the other events"}.get(
            k, k.replace("_ns", "").replace("ns_", ""))
        if v >= 1000:
            return "%s %.1f us" % (name, v / 1000)
        return "%s %.1f ns" % (name, v)
    if k in ("ratio", "ratio_vs_memcpy4k", "median_over_tsc", "two_over_one_thread",
             "lane_capacity_ratio"):
        return "%.2f%s" % (v, UNITS[k])
    if k == "loss_pct":
        return "%.3f%s" % (v, UNITS[k])
    if k == "service_cpu_pct":
        return "service %.0f%% of a core" % v
    if k in ("mb_per_s", "baseline_mb_per_s", "mb_per_s_per_thread"):
        s = "%.0f" % v if v >= 100 else "%.2f" % v
    elif isinstance(v, (int, float)) and abs(v) >= 1e6 and k != "sdk_dropped":
        s = "%.2f M" % (v / 1e6)
    elif isinstance(v, (int, float)) and abs(v) >= 1e4 and k != "sdk_dropped":
        s = "%.1f k" % (v / 1e3)
    elif isinstance(v, float):
        s = "%.2f" % v
    else:
        s = str(v)
    return s + UNITS.get(k, " " + k)

def headline(name, data):
    res = data.get("results", []) if data else []
    out = []
    for match, fields, label in HEAD.get(name, []):
        for r in res:
            if all(r.get(k) == v for k, v in match.items()):
                out.append({"case": label, **{f: r.get(f) for f in fields if f in r}})
                break
    if not out:
        for r in res[:3]:
            out.append({"case": str(r.get("case", "")), **{k: v for k, v in r.items()
                                                          if isinstance(v, (int, float))}})
    return out

entries = []
with open(status_path) as f:
    for line in f:
        name, st, secs, path = line.rstrip("\n").split("\t")
        data = load(path)
        e = {"name": name, "status": st, "seconds": float(secs),
             "cores": data.get("cores") if data else os.cpu_count(),
             "results_file": os.path.relpath(path, root)}
        if name.startswith("loadgen_") and data:
            t, c = data["total"], data["config"]
            e["config"] = c
            e["headline"] = [{"case": LOADGEN.get(name, name),
                              **{k: t.get(k) for k in LG_FIELDS},
                              "all_found_in_order": t.get("all_found_in_order")}]
        else:
            e["headline"] = headline(name, data)
        if data is None:
            e["status"] = st if st != "ok" else "no results file"
        entries.append(e)

def git(*a):
    try:
        return subprocess.run(["git", "-C", root, *a], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""

summary = {"generated_unix_time": int(time.time()), "cores": os.cpu_count(),
           "kernel": platform.release(), "commit": git("rev-parse", "--short", "HEAD"),
           "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
           "benchmarks": entries}
with open(os.path.join(results, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)
    f.write("\n")

day = time.strftime("%Y-%m-%d", time.gmtime(summary["generated_unix_time"]))
lines = ["Measured by `bench/run_all.sh` on %s: %d cores, Linux %s, commit %s%s." %
         (day, summary["cores"], summary["kernel"], summary["commit"] or "?",
          " (with local changes)" if summary["dirty"] else ""),
         "Figures from `bench/results/summary.json`; each benchmark's own JSON has the rest.",
         "", "| benchmark | case | figures |", "|---|---|---|"]
for e in entries:
    if not e["headline"]:
        lines.append("| %s | - | %s |" % (e["name"], e["status"]))
    for h in e["headline"]:
        figs = [fmt(k, v) for k, v in h.items() if k not in ("case", "all_found_in_order")]
        figs = [s for s in figs if s]
        if e["status"] not in ("ok", "lost_events"):
            figs.append(e["status"])
        lines.append("| %s | %s | %s |" % (e["name"], h["case"], ", ".join(figs)))
md = "\n".join(lines) + "\n"
with open(os.path.join(results, "summary.md"), "w") as f:
    f.write(md)
print(md)

if do_readme:
    path = os.path.join(root, "README.md")
    with open(path) as f:
        text = f.read()
    head = "## Latest benchmark figures\n"
    section = head + "\n" + md + "\n"
    if head in text:
        a = text.index(head)
        b = text.find("\n## ", a + len(head))
        text = text[:a] + section + (text[b + 1:] if b >= 0 else "")
    elif "\n## License" in text:
        a = text.index("\n## License") + 1
        text = text[:a] + section + text[a:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path, "w") as f:
        f.write(text)
PY
echo "run_all.sh: wrote $results/summary.json and summary.md"
exit $failed
