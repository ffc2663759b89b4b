#!/usr/bin/env bash
# Triage queries under a million crashes (issue 16), over HTTP against the release
# `crashbox serve`:
#
# 1. examples/triage_load writes a data dir of N crashes (default 1,000,000) in 10,000
#    Zipf-sized groups over 20 releases through Store::insert_crashes, once: it is
#    cached in target/triage-bench (REBUILD=1 writes it again). Each run works on a copy.
# 2. A server on the copy and one on an empty store, each with the dSYM uploaded.
# 3. Every query (each sort, each filter, a deep cursor page, group pages, their crash
#    pages, release pages) with wrk, one connection, QUERY_SECONDS each: p50/p99.
# 4. Maximum intake (wrk, benches/load/intake.lua, 32 connections, INTAKE_SECONDS),
#    alternately on the empty store and on the loaded one, ROUNDS times: the ratio.
# 5. The queries again while examples/intake_pace sends reports to the loaded server at
#    a fixed half of its measured maximum (open loop, 32 threads).
#
#   bash benches/triage.sh
#   REBUILD=1 N=1000000 QUERY_SECONDS=5 INTAKE_SECONDS=15 ROUNDS=2 bash benches/triage.sh
#   ONLY_INTAKE=1 ROUNDS=2 INTAKE_SECONDS=15 bash benches/triage.sh   # step 4 alone
#
# Not part of .ci/run: the load alone takes minutes.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
N=${N:-1000000}
QUERY_SECONDS=${QUERY_SECONDS:-5}
INTAKE_SECONDS=${INTAKE_SECONDS:-15}
ROUNDS=${ROUNDS:-2}
CACHE=${TRIAGE_CACHE:-$ROOT/target/triage-bench}
APP=com.crashbox.bench
need_tools wrk
build_release
machine_info

# A cache without `grouping_rules` in meta.txt predates the fingerprint in its store
# (below), one without `report_timestamps` the reports' own times (schema v7's dedup
# key leads with the crash day): written again.
if [ -n "${REBUILD:-}" ] || [ ! -s "$CACHE/meta.txt" ] ||
  [ "$(awk '$1 == "crashes" {print $2}' "$CACHE/meta.txt")" != "$N" ] ||
  ! grep -q '^grouping_rules ' "$CACHE/meta.txt" ||
  ! grep -q '^report_timestamps ' "$CACHE/meta.txt"; then
  echo "== loading $N crashes into $CACHE/data"
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  /usr/bin/time -f "load: %e s wall, %M kB peak RSS" \
    target/release/examples/triage_load fixtures/out/reports/fixture_v1.ips "$CACHE" "$N"
else
  echo "== reusing $CACHE/data (REBUILD=1 to write it again)"
fi
cat "$CACHE/meta.txt"
age_h=$(awk -v now="$(date +%s%3N)" '$1 == "generated_at_ms" {printf "%.1f", (now - $2) / 3600000}' "$CACHE/meta.txt")
echo "data dir written ${age_h} h ago"
if awk -v a="$age_h" 'BEGIN {exit !(a > 12)}'; then
  echo "warning: crash times are relative to when the data dir was written; the trend sort's" \
    "last 48 hours drift away from the newest releases as it ages (REBUILD=1)" >&2
fi

work=$(mktemp -d)
LOADED_PID="" EMPTY_PID=""
cleanup() {
  for pid in $LOADED_PID $EMPTY_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
python3 benches/load/gen_report.py fixtures/out/reports/fixture_v1.ips "$work/report.ips"
cp -a "$CACHE/data" "$work/data-loaded.tmp"

# serve NAME: a server on $work/NAME/data (a copy of the cache for "loaded"), the dSYM
# uploaded; sets NAME_PID, NAME_ADDR, NAME_READ, NAME_INGEST.
serve() {
  local name=$1 dir="$work/$1"
  mkdir -p "$dir"
  [ "$name" != loaded ] || mv "$work/data-loaded.tmp" "$dir/data"
  start_server "$dir"
  read -r code _ < <(upload fixtures/out/dSYMs.zip "$dir/upload.json" \
    "?release=com.crashbox.fixture%201.0%20(1)")
  [ "$code" = 201 ] || { echo "dSYMs upload answered $code" >&2; exit 1; }
  printf -v "${name^^}_PID" %s "$SERVER_PID"
  printf -v "${name^^}_ADDR" %s "$SERVER_ADDR"
  printf -v "${name^^}_READ" %s "$("$CRASHBOX" token create --data-dir "$dir/data" --scope read 2>/dev/null | awk '{print $NF}')"
  printf -v "${name^^}_INGEST" %s "$("$CRASHBOX" token create --data-dir "$dir/data" --scope ingest 2>/dev/null | awk '{print $NF}')"
  SERVER_PID=""
}
serve loaded
# A server that finds other grouping rules than the store's signs every stored crash
# again in the background, which takes a core and the writer's idle time for as long as
# the benchmark runs (run 5's 0.36 intake ratio) and moves the crashes out of their
# groups: the data dir must be written with this binary's rules.
if grep -q "grouping rules changed" "$work/loaded/server.log"; then
  echo "the cached data dir was signed with other grouping rules than this binary's;" \
    "REBUILD=1 writes it again" >&2
  exit 1
fi
serve empty
echo "loaded server on $LOADED_ADDR (pid $LOADED_PID), empty one on $EMPTY_ADDR (pid $EMPTY_PID)"

# to_ms VALUE: wrk's "1.23ms" / "850.00us" / "1.02s" in ms.
to_ms() { awk -v v="$1" 'BEGIN {
  if (v ~ /us$/) printf "%.2f", v / 1000; else if (v ~ /ms$/) printf "%.2f", v + 0;
  else if (v ~ /s$/) printf "%.2f", v * 1000; else printf "%s", v }'; }

# rss NAME_PID: the server's VmRSS in MiB.
rss() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# The queries: "name|path" (paths listed in files for the rotating ones).
# ONLY_INTAKE=1 skips them (and the queries under intake below): the intake ratio alone.
if [ -z "${ONLY_INTAKE:-}" ]; then
enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
newest=$(enc "$APP 1.19 (119)")
older=$(enc "$APP 1.10 (110)")
get() { curl -sS -H "Authorization: Bearer $LOADED_READ" "http://$LOADED_ADDR$1"; }
# The cursor of page 101 by count (5,000 groups deep), walked with the API itself.
cursor=""
for _ in $(seq 1 100); do
  cursor=$(get "/api/v1/groups?sort=count${cursor:+&cursor=$(enc "$cursor")}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["next_cursor"] or "")')
done
[ -n "$cursor" ] || { echo "no cursor at page 100" >&2; exit 1; }
sed 's|^|/api/v1/groups/|' "$CACHE/groups.txt" >"$work/group-pages"
sed 's|^|/api/v1/groups/|; s|$|/crashes|' "$CACHE/groups.txt" >"$work/crash-pages"
for r in $(seq 0 19); do echo "/api/v1/releases/$(enc "$APP 1.$r ($((100 + r)))")"; done >"$work/release-pages"
QUERIES=(
  "sort=count|/api/v1/groups?sort=count"
  "sort=devices|/api/v1/groups?sort=devices"
  "sort=last_seen (default)|/api/v1/groups"
  "sort=first_seen|/api/v1/groups?sort=first_seen"
  "sort=trend|/api/v1/groups?sort=trend"
  "release=1.19 (newest)|/api/v1/groups?release=$newest"
  "release=1.10|/api/v1/groups?release=$older"
  "status=unresolved|/api/v1/groups?status=unresolved"
  "status=resolved|/api/v1/groups?status=resolved"
  "status=regressed|/api/v1/groups?status=regressed"
  "status=ignored|/api/v1/groups?status=ignored"
  "new_in=1.19|/api/v1/groups?new_in=$newest"
  "os=iOS 17 (every 17.x)|/api/v1/groups?os=iOS%2017"
  "os=iPadOS 18.1|/api/v1/groups?os=iPadOS%2018.1"
  "device_model=iPad14,1|/api/v1/groups?device_model=iPad14%2C1"
  "q=imagecache|/api/v1/groups?q=imagecache"
  "release=1.19 + status=unresolved,regressed + sort=count|/api/v1/groups?release=$newest&status=unresolved,regressed&sort=count"
  "sort=trend + os=iOS 18|/api/v1/groups?sort=trend&os=iOS%2018"
  "sort=count, page 101 (cursor)|/api/v1/groups?sort=count&cursor=$(enc "$cursor")"
  "a group (200 groups, every size)|@$work/group-pages"
  "its crashes, newest 50|@$work/crash-pages"
  "a release (each of the 20)|@$work/release-pages"
)

# What each query answers on the loaded store (filters must select something).
echo "== answers (first path of each)"
for entry in "${QUERIES[@]}"; do
  name=${entry%%|*} path=${entry#*|}
  [ "${path:0:1}" != @ ] || path=$(head -1 "${path:1}")
  get "$path" | python3 -c '
import json, sys
name, body = sys.argv[1], json.load(sys.stdin)
parts = [f"{k}: {len(v)}" for k, v in body.items() if isinstance(v, list) and k in
         ("groups", "crashes", "releases", "top_groups", "new_groups", "regressed_groups", "activity")]
if "next_cursor" in body: parts.append("more" if body["next_cursor"] else "last page")
if "count" in body: parts.append("count %d" % body["count"])
print(f"  {name}: " + ", ".join(parts))' "$name"
done

# queries LABEL: every query against the loaded server; appends "name<TAB>p50<TAB>p99<TAB>req/s" to $work/LABEL.tsv.
queries() {
  local label=$1 entry name path
  : >"$work/$label.tsv"
  for entry in "${QUERIES[@]}"; do
    name=${entry%%|*} path=${entry#*|}
    if [ "${path:0:1}" = @ ]; then cp "${path:1}" "$work/paths"; else echo "$path" >"$work/paths"; fi
    PATHS="$work/paths" TOKEN="$LOADED_READ" wrk -t1 -c1 -d"${QUERY_SECONDS}s" --latency \
      -s benches/triage_query.lua "http://$LOADED_ADDR" >"$work/wrk.log"
    if grep -q "Non-2xx" "$work/wrk.log"; then
      echo "$name: some answers were not 2xx" >&2
      cat "$work/wrk.log" >&2
      exit 1
    fi
    local p50 p99 rps
    p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/wrk.log")")
    p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/wrk.log")")
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.log")
    printf '%s\t%s\t%s\t%s\n' "$name" "$p50" "$p99" "$rps" >>"$work/$label.tsv"
    printf '  %-58s p50 %7s ms  p99 %7s ms  (%s req/s)\n' "$name" "$p50" "$p99" "$rps"
  done
}

echo "== queries, idle (load average $(cut -d' ' -f1-3 /proc/loadavg))"
queries idle
fi

# max_intake ADDR TOKEN: wrk's reports/s over INTAKE_SECONDS, 32 connections.
max_intake() {
  REPORT="$work/report.ips" TOKEN="$2" wrk -t2 -c32 -d"${INTAKE_SECONDS}s" --latency \
    -s benches/load/intake.lua "http://$1" >"$work/intake.log"
  if grep -q "Non-2xx" "$work/intake.log"; then cat "$work/intake.log" >&2; exit 1; fi
  echo "$(awk '/Requests\/sec/ {print $2}' "$work/intake.log") $(to_ms "$(awk '$1 == "99%" {print $2}' "$work/intake.log")")"
}
echo "== maximum intake, empty store and loaded store alternately ($ROUNDS rounds of $INTAKE_SECONDS s)"
: >"$work/intake.tsv"
for round in $(seq 1 "$ROUNDS"); do
  read -r e e99 < <(max_intake "$EMPTY_ADDR" "$EMPTY_INGEST")
  read -r l l99 < <(max_intake "$LOADED_ADDR" "$LOADED_INGEST")
  printf '%s\t%s\n' "$e" "$l" >>"$work/intake.tsv"
  echo "  round $round: empty $e reports/s (p99 $e99 ms), loaded $l reports/s (p99 $l99 ms), ratio $(awk -v e="$e" -v l="$l" 'BEGIN {printf "%.2f", l / e}')  [load average $(cut -d' ' -f1-3 /proc/loadavg); RSS empty $(rss "$EMPTY_PID"), loaded $(rss "$LOADED_PID") MiB]"
done
read -r empty_rate loaded_rate < <(awk '{e += $1; l += $2} END {printf "%.0f %.0f\n", e / NR, l / NR}' "$work/intake.tsv")
half=$(awk -v l="$loaded_rate" 'BEGIN {printf "%.0f", l / 2}')
echo "  mean: empty $empty_rate, loaded $loaded_rate reports/s; loaded/empty $(awk -v e="$empty_rate" -v l="$loaded_rate" 'BEGIN {printf "%.2f", l / e}') (target >= 0.9)"

[ -z "${ONLY_INTAKE:-}" ] || exit 0

echo "== queries while intake runs at $half reports/s (half the loaded maximum), examples/intake_pace"
pace_seconds=$(( ${#QUERIES[@]} * (QUERY_SECONDS + 1) + 8 ))
target/release/examples/intake_pace "http://$LOADED_ADDR" "$LOADED_INGEST" "$work/report.ips" \
  "$half" "$pace_seconds" 32 >"$work/pace.log" &
pace=$!
sleep 3
queries busy
wait "$pace"
cat "$work/pace.log"

echo "== table (ms; one connection, ${QUERY_SECONDS} s of back-to-back requests per row)"
echo "| query | idle p50 | idle p99 | under $half/s intake p50 | p99 |"
echo "| --- | --- | --- | --- | --- |"
paste "$work/idle.tsv" "$work/busy.tsv" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $6, $7}'
worst=$(cat "$work/idle.tsv" "$work/busy.tsv" | sort -t$'\t' -k3 -g | tail -1)
echo "slowest p99: $(echo "$worst" | cut -f1) at $(echo "$worst" | cut -f3) ms (limit 50, target 10)"
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
