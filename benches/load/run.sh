#!/usr/bin/env bash
# Crash intake under load: wrk POSTs 60-frame .ips reports (a new incident each) with
# the dSYM present, at concurrency 32 over loopback, against a release server with
# the real store. Prints reports/s, p50/p99, server RSS over the run, and the
# in-process parse+symbolicate cost of the same reports (examples/intake_cost.rs),
# with the ratio of the full intake's CPU cost per report to that baseline.
#
#   bash benches/load/run.sh            # 60 s
#   DURATION=300s bash benches/load/run.sh   # the 5-minute RSS-flatness run
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"
DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-32}
need_tools wrk
build_release

work=$(mktemp -d)
trap 'stop_server; rm -rf "$work"' EXIT
python3 benches/load/gen_report.py fixtures/out/reports/fixture_v1.ips "$work/report.ips"
start_server "$work"
read -r code _ < <(upload fixtures/out/dSYMs.zip "$work/upload.json" \
  "?release=com.crashbox.fixture%201.0%20(1)")
# Without the dSYM the run would measure intake without symbolication.
[ "$code" = 201 ] || { echo "dSYMs upload answered $code" >&2; exit 1; }
token=$("$CRASHBOX" token create --data-dir "$work/data" --scope ingest | awk '{print $NF}')

cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER_PID/stat"; }
echo "server RSS before: $(vm_kb VmRSS) kB"
start_sampler 5 "$work/rss.log"
ticks_before=$(cpu_ticks)
REPORT="$work/report.ips" TOKEN="$token" wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency \
  -s benches/load/intake.lua "http://$SERVER_ADDR" | tee "$work/wrk.log"
stop_sampler
ticks_after=$(cpu_ticks)
# A refused request is cheap; counting it would flatter the cost per report.
if grep -q "Non-2xx" "$work/wrk.log"; then echo "some requests were refused" >&2; exit 1; fi
echo "server RSS after: $(vm_kb VmRSS) kB, peak $(vm_kb VmHWM) kB"
echo "RSS samples (kB, every 5 s): $(awk '{print $2}' "$work/rss.log" | tr '\n' ' ')"
echo "RssAnon samples (kB): $(awk '{print $4}' "$work/rss.log" | tr '\n' ' ')"
echo "RssFile samples (kB): $(awk '{print $5}' "$work/rss.log" | tr '\n' ' ')"
stored=$(curl -s "http://$SERVER_ADDR/metrics" | awk '/crashbox_crashes_total\{outcome="stored"\}/ {print $2}')
echo "crashes stored: $stored"
disk=$(du -sb "$work/data" | awk '{print $1}')
echo "data dir: $disk bytes, $(python3 -c "print(round($disk / max(1, float('${stored:-0}' or 0))))") bytes per stored crash"
# Flatness: RSS growth after the first minute (warm-up: caches and pools filling), per
# crash stored since then, assuming the steady rate wrk keeps up. A least-squares line
# through every sample after 60 s, not the two end samples: single samples move by
# ±3 MiB from one to the next.
python3 - "$work/rss.log" "$stored" <<'PY'
import sys
# Sampler lines: elapsed seconds, VmRSS, VmHWM, RssAnon, RssFile (kB).
samples = [(float(f[0]), int(f[1])) for f in map(str.split, open(sys.argv[1])) if len(f) == 5]
stored = float(sys.argv[2] or 0)
points = [(t, kb / 1024) for t, kb in samples if t >= 60]
if len(points) > 2 and stored > 0:
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    slope = sum((t - mean_t) * (m - mean_m) for t, m in points) / sum(
        (t - mean_t) ** 2 for t, _ in points)
    (first, _), (last, _) = points[0], points[-1]
    start, end = mean_m + slope * (first - mean_t), mean_m + slope * (last - mean_t)
    after = stored * (last - first) / samples[-1][0]
    print(f"RSS after warm-up (60 s, fitted): {start:.1f} -> {end:.1f} MiB, "
          f"{slope * 60:.2f} MiB/min, {(end - start) * 1048576 / after:.1f} B per crash stored since")
PY

target/release/examples/intake_cost "$work/report.ips" fixtures/out/dSYMs.zip 5000 \
  | tee "$work/cost.log"
cost=$(awk '/parse\+scrub/ {print $(NF-1)}' "$work/cost.log")
python3 - "$stored" "$cost" "$ticks_before" "$ticks_after" "$(getconf CLK_TCK)" <<'PY'
import sys
stored, cost_us = float(sys.argv[1]), float(sys.argv[2])
ticks, hz = int(sys.argv[4]) - int(sys.argv[3]), int(sys.argv[5])
full_us = ticks / hz * 1e6 / stored
print(f"full intake: {full_us:.0f} µs of server CPU per report (user+system, HTTP, store, "
      f"flushes); parse+scrub+symbolicate alone: {cost_us:.0f} µs; ratio {full_us / cost_us:.2f}x (target <= 3x)")
PY
