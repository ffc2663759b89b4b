#!/usr/bin/env bash
# Crash intake under load: wrk POSTs 60-frame .ips reports (a new incident each) with
# the dSYM present, at concurrency 32 over loopback, against a release server with
# a real sled store. Prints reports/s, p50/p99, server RSS over the run, and the
# in-process parse+symbolicate cost of the same reports (examples/intake_cost.rs),
# with the ratio of the full intake's CPU cost per report to that baseline.
#
#   bash benches/load/run.sh            # 60 s
#   DURATION=300s bash benches/load/run.sh   # the 5-minute RSS-flatness run
set -euo pipefail
cd "$(dirname "$0")/../.."
DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-32}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet --example intake_cost
cargo build --release --quiet

work=$(mktemp -d)
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
python3 benches/load/gen_report.py fixtures/out/reports/fixture_v1.ips "$work/report.ips"
target/release/crashbox serve --listen 127.0.0.1:0 --data-dir "$work/data" \
  --dsyms-dir "$work/dsyms" 2> "$work/server.log" &
server=$!
for _ in $(seq 100); do
  url=$(grep -o 'listening on http://[0-9.:]*' "$work/server.log" | sed 's/listening on //' || true)
  [ -n "$url" ] && break
  sleep 0.1
done
admin=$(cat "$work/data/admin-token")
curl -sS -o /dev/null -w "dSYMs upload: %{http_code}\n" -H "Authorization: Bearer $admin" \
  --data-binary @fixtures/out/dSYMs.zip "$url/api/v1/dsyms?release=com.crashbox.fixture%201.0%20(1)"
token=$(target/release/crashbox token create --data-dir "$work/data" --scope ingest | awk '{print $NF}')

rss() { awk '/VmRSS/ {print $2}' "/proc/$server/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
echo "server RSS before: $(rss) kB"
(
  while kill -0 $server 2>/dev/null; do echo "$(date +%s) $(rss)"; sleep 5; done
) > "$work/rss.log" &
sampler=$!
ticks_before=$(cpu_ticks)
REPORT="$work/report.ips" TOKEN="$token" wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency \
  -s benches/load/intake.lua "$url" | tee "$work/wrk.log"
kill $sampler 2>/dev/null || true
ticks_after=$(cpu_ticks)
echo "server RSS after: $(rss) kB, peak $(awk '/VmHWM/ {print $2}' /proc/$server/status) kB"
echo "RSS samples (kB, every 5 s): $(awk '{print $2}' "$work/rss.log" | tr '\n' ' ')"
stored=$(curl -s "$url/metrics" | awk '/crashbox_crashes_total\{outcome="stored"\}/ {print $2}')
echo "crashes stored: $stored"
# Flatness: RSS growth after the first minute (warm-up: caches and pools filling), per
# crash stored since then, assuming the steady rate wrk keeps up.
python3 - "$work/rss.log" "$stored" <<'PY'
import sys
samples = [int(line.split()[1]) for line in open(sys.argv[1]) if len(line.split()) == 2]
stored = float(sys.argv[2] or 0)
if len(samples) > 14 and stored > 0:
    warm, last = samples[12], samples[-1]
    after = stored * (len(samples) - 13) / (len(samples) - 1)
    print(f"RSS after warm-up (60 s): {warm / 1024:.0f} -> {last / 1024:.0f} MiB, "
          f"{(last - warm) * 1024 / after:.0f} B per crash stored since")
PY

cargo run --release --quiet --example intake_cost -- "$work/report.ips" fixtures/out/dSYMs.zip 5000 \
  | tee "$work/cost.log"
requests=$(awk '/requests in/ {print $1}' "$work/wrk.log")
cost=$(awk '/parse\+scrub/ {print $(NF-1)}' "$work/cost.log")
python3 - "$requests" "$cost" "$ticks_before" "$ticks_after" "$(getconf CLK_TCK)" <<'PY'
import sys
requests, cost_us = int(sys.argv[1]), float(sys.argv[2])
ticks, hz = int(sys.argv[4]) - int(sys.argv[3]), int(sys.argv[5])
full_us = ticks / hz * 1e6 / requests
print(f"full intake: {full_us:.0f} µs of server CPU per report (user+system, HTTP, store, "
      f"flushes); parse+scrub+symbolicate alone: {cost_us:.0f} µs; ratio {full_us / cost_us:.2f}x (target <= 3x)")
PY
