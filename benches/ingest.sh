#!/usr/bin/env bash
# Ingestion benchmark: uploading LargeApp's dSYMs zip to a crashbox server, against
# the baseline of a bare symbolic SymCache conversion of the same DWARF file
# (examples/bare_symcache.rs), measured in the same run.
#
#   bash benches/ingest.sh            # RUNS=3 by default
#
# Per run:
#  (a) bare converter under /usr/bin/time -v: wall time, peak RSS (its RssAnon and
#      RssFile are also sampled every 0.1 s);
#  (b) a fresh `crashbox serve`, one upload of LargeApp.dSYMs.zip (the SymCache is
#      built during the request): wall time of the upload (curl's time_total) and the
#      server's peak RSS (VmHWM at the end; VmRSS/RssAnon/RssFile sampled every 0.2 s);
#  (c) diagnostic: the same with the bare DWARF file as the body (no zip to inflate);
#  (d) diagnostic: (a) again with mimalloc, the crashbox binary's global allocator
#      (examples/bare_symcache_mimalloc.rs).
# Then, once, examples/ingest_phases.rs: the upload's phases timed outside the server.
# Throughput is always DWARF bytes (10^6 B = 1 MB) per second of wall time.
# Targets: zip ingest/bare throughput >= 0.8, server peak RSS / bare peak RSS <= 1.2.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS="${RUNS:-3}"

need_tools
build_release
bash "$ROOT/benches/gen-large-dsym.sh" | sed 's/^/  /'

TMP=$(mktemp -d "${TMPDIR:-/tmp}/crashbox-ingest.XXXXXX")
trap 'stop_server; rm -rf "$TMP"' EXIT

dwarf_bytes=$(stat -c %s "$DWARF")
zip_bytes=$(stat -c %s "$DSYMS_ZIP")
machine_info
echo "input: DWARF $(python3 -c "print(f'{$dwarf_bytes/1e6:.1f}')") MB, zip $(python3 -c "print(f'{$zip_bytes/1e6:.1f}')") MB (deflate)"
# Every side starts from a warm page cache.
cat "$DWARF" "$DSYMS_ZIP" >/dev/null

# max_col FILE COL: the largest value of a column of a sampler file.
max_col() { awk -v c="$2" 'BEGIN {m = 0} $c > m {m = $c} END {print m}' "$1"; }

results="$TMP/results.txt"
: >"$results"
# measure_bare EXAMPLE: runs examples/EXAMPLE on the DWARF file under /usr/bin/time -v,
# sampling its RssAnon/RssFile every 0.1 s; prints "wall in-process peakRSS anon file".
measure_bare() {
    /usr/bin/time -v "$ROOT/target/release/examples/$1" "$DWARF" "$TMP/bare.symcache" \
        >"$TMP/bare.out" 2>"$TMP/bare.time" &
    local time_pid=$! pid="" wall rss self
    for _ in $(seq 1 200); do
        pid=$(pgrep -P "$time_pid" || true)
        [ -n "$pid" ] && break
        sleep 0.01
    done
    : >"$TMP/bare.rss"
    [ -n "$pid" ] && start_sampler 0.1 "$TMP/bare.rss" "$pid"
    wait "$time_pid"
    stop_sampler
    wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s}' "$TMP/bare.time")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$TMP/bare.time")
    self=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$TMP/bare.out")
    rm -f "$TMP/bare.symcache"
    echo "$wall $self $rss $(max_col "$TMP/bare.rss" 4) $(max_col "$TMP/bare.rss" 5)"
}

for run in $(seq 1 "$RUNS"); do
    # (a) the baseline
    row=$(measure_bare bare_symcache)

    # (b) zip upload, (c) raw DWARF upload; each on a fresh server
    for body in zip raw; do
        srv="$TMP/server-$run-$body"
        start_server "$srv"
        start_sampler 0.2 "$srv/rss.txt"
        if [ "$body" = zip ]; then
            read -r code wall < <(upload "$DSYMS_ZIP" "$srv/response.json")
        else
            read -r code wall < <(upload "$DWARF" "$srv/response.json" "?name=LargeApp")
        fi
        hwm=$(vm_kb VmHWM)
        stop_server
        if [ "$code" != 201 ]; then
            echo "run $run ($body): upload answered $code:" >&2
            cat "$srv/response.json" >&2
            exit 1
        fi
        row="$row $wall $hwm $(max_col "$srv/rss.txt" 4) $(max_col "$srv/rss.txt" 5)"
        rm -rf "$srv/dsyms"
    done
    # (d) diagnostic: the baseline with the crashbox binary's allocator (mimalloc)
    row="$row $(measure_bare bare_symcache_mimalloc)"
    echo "$row" >>"$results"
done

python3 - "$results" "$dwarf_bytes" <<'EOF'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
mb = int(sys.argv[2]) / 1e6
MiB = lambda kb: kb / 1024
print()
print("run | bare: s  MB/s  peakRSS (anon+file) | zip upload: s  MB/s  server peakRSS (anon+file) | ratios: MB/s RSS | raw upload: s  MB/s  peakRSS (anon+file)")
for i, r in enumerate(rows, 1):
    bw, bs, br, ba, bf, zw, zh, za, zf, rw, rh, ra, rf, mw, ms, mr, ma, mf = r
    print(f"{i:>3} | {bw:5.2f} {mb / bw:5.1f} {MiB(br):4.0f} MiB ({MiB(ba):.0f}+{MiB(bf):.0f}) "
          f"| {zw:5.2f} {mb / zw:5.1f} {MiB(zh):4.0f} MiB ({MiB(za):.0f}+{MiB(zf):.0f}) "
          f"| {bw / zw:4.2f} {zh / br:4.2f} "
          f"| {rw:5.2f} {mb / rw:5.1f} {MiB(rh):4.0f} MiB ({MiB(ra):.0f}+{MiB(rf):.0f})")
med = lambda k: statistics.median(r[k] for r in rows)
speed = statistics.median(r[0] / r[5] for r in rows)
rss = statistics.median(r[6] / r[2] for r in rows)
raw_speed = statistics.median(r[0] / r[9] for r in rows)
raw_rss = statistics.median(r[10] / r[2] for r in rows)
print()
print(f"median of {len(rows)} runs (DWARF {mb:.1f} MB; anon+file = max sampled RssAnon + max sampled RssFile):")
print(f"  bare conversion:     {med(0):5.2f} s wall ({med(1):.2f} s in-process) = {mb / med(0):5.1f} MB/s, "
      f"peak RSS {MiB(med(2)):.0f} MiB ({MiB(med(3)):.0f} anon + {MiB(med(4)):.0f} file)")
print(f"  crashbox zip upload: {med(5):5.2f} s wall = {mb / med(5):5.1f} MB/s, "
      f"server peak RSS {MiB(med(6)):.0f} MiB ({MiB(med(7)):.0f} anon + {MiB(med(8)):.0f} file)")
print(f"  crashbox raw upload: {med(9):5.2f} s wall = {mb / med(9):5.1f} MB/s, "
      f"server peak RSS {MiB(med(10)):.0f} MiB ({MiB(med(11)):.0f} anon + {MiB(med(12)):.0f} file)  [diagnostic: no unzip]")
print(f"  throughput ratio zip ingest/bare = {speed:.2f} (target >= 0.80: {'met' if speed >= 0.8 else 'MISSED'}); raw ingest/bare = {raw_speed:.2f}")
print(f"  peak RSS ratio server/bare       = {rss:.2f} (target <= 1.20: {'met' if rss <= 1.2 else 'MISSED'}); raw upload = {raw_rss:.2f}")
print(f"  diagnostic, bare with mimalloc (the server's allocator): {med(13):.2f} s = {mb / med(13):.1f} MB/s, "
      f"peak RSS {MiB(med(15)):.0f} MiB ({MiB(med(16)):.0f} anon + {MiB(med(17)):.0f} file); "
      f"server/bare-mimalloc: MB/s {statistics.median(r[13] / r[5] for r in rows):.2f}, RSS {statistics.median(r[6] / r[15] for r in rows):.2f}")
EOF

# Diagnostic, once: the server's phases outside the server (examples/ingest_phases.rs).
echo
"$ROOT/target/release/examples/ingest_phases" "$DSYMS_ZIP" "$DWARF"
