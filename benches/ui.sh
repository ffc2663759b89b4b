#!/usr/bin/env bash
# Web UI pages on the 1,000,000-crash store (issue 12: every page under 100 ms), over
# HTTP against the release `crashbox serve`, signed in with a session cookie.
#
# Uses the data dir benches/triage.sh caches (target/triage-bench; written there first
# when missing, ~3 min), on a copy, with the fixture dSYM uploaded so group pages
# symbolicate their sample crash. Each page (or rotating set of pages) is fetched back
# to back over one connection for PAGE_SECONDS with wrk: p50 and p99.
#
#   bash benches/ui.sh
#   PAGE_SECONDS=5 bash benches/ui.sh
#
# Not part of .ci/run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
N=${N:-1000000}
PAGE_SECONDS=${PAGE_SECONDS:-5}
CACHE=${TRIAGE_CACHE:-$ROOT/target/triage-bench}
APP=com.crashbox.bench
need_tools wrk
build_release
machine_info

if [ ! -s "$CACHE/meta.txt" ] || [ "$(awk '$1 == "crashes" {print $2}' "$CACHE/meta.txt")" != "$N" ] ||
  ! grep -q '^grouping_rules ' "$CACHE/meta.txt"; then
  echo "== loading $N crashes into $CACHE/data"
  rm -rf "$CACHE"
  mkdir -p "$CACHE"
  target/release/examples/triage_load fixtures/out/reports/fixture_v1.ips "$CACHE" "$N"
fi
cat "$CACHE/meta.txt"

work=$(mktemp -d)
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
cp -a "$CACHE/data" "$work/data"
start_server "$work"
# A data dir signed with other grouping rules would be re-signed in the background
# while the pages are measured (see benches/README, triage run 6).
if grep -q "grouping rules changed" "$work/server.log"; then
  echo "the cached data dir was signed with other grouping rules than this binary's;" \
    "REBUILD=1 bash benches/triage.sh writes it again" >&2
  exit 1
fi
read -r code _ < <(upload fixtures/out/dSYMs.zip "$work/upload.json" "?release=com.crashbox.fixture%201.0%20(1)")
[ "$code" = 201 ] || { echo "dSYMs upload answered $code" >&2; exit 1; }
read_token=$("$CRASHBOX" token create --data-dir "$work/data" --scope read --name bench 2>/dev/null | awk '{print $NF}')
cookie=$(curl -sS -o /dev/null -D - --data-urlencode "token=$read_token" "http://$SERVER_ADDR/login" |
  sed -n 's/^[Ss]et-[Cc]ookie: \(crashbox_session=[0-9a-f]*\).*/\1/p')
[ -n "$cookie" ] || { echo "sign-in set no cookie" >&2; exit 1; }

enc() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }
newest=$(enc "$APP 1.19 (119)")
sed 's|^|/groups/|' "$CACHE/groups.txt" >"$work/group-pages"
for r in $(seq 0 19); do echo "/releases/$(enc "$APP 1.$r ($((100 + r)))")"; done >"$work/release-pages"
PAGES=(
  "groups (default: open, last seen)|/"
  "groups, all states by crashes|/?status=all&sort=count"
  "groups by devices|/?sort=devices"
  "groups by trend|/?sort=trend"
  "groups in release 1.19|/?status=all&release=$newest"
  "groups new in 1.19|/?status=all&new_in=$newest"
  "groups on iOS 17|/?status=all&os=iOS%2017"
  "groups, search imagecache|/?status=all&q=imagecache"
  "a group (200 groups, every size)|@$work/group-pages"
  "releases|/releases"
  "a release (each of the 20)|@$work/release-pages"
  "debug files|/debug-files"
)

to_ms() { awk -v v="$1" 'BEGIN {
  if (v ~ /us$/) printf "%.2f", v / 1000; else if (v ~ /ms$/) printf "%.2f", v + 0;
  else if (v ~ /s$/) printf "%.2f", v * 1000; else printf "%s", v }'; }

echo "== pages, idle (load average $(cut -d' ' -f1-3 /proc/loadavg)); one connection, $PAGE_SECONDS s each"
echo "| page | p50 ms | p99 ms | bytes |"
echo "| --- | ---: | ---: | ---: |"
for entry in "${PAGES[@]}"; do
  name=${entry%%|*} path=${entry#*|}
  if [ "${path:0:1}" = @ ]; then cp "${path:1}" "$work/paths"; else echo "$path" >"$work/paths"; fi
  first=$(head -1 "$work/paths")
  read -r status bytes < <(curl -sS -o "$work/page.html" -w '%{http_code} %{size_download}\n' -H "Cookie: $cookie" "http://$SERVER_ADDR$first")
  [ "$status" = 200 ] || { echo "$name: $first answered $status" >&2; head -c 400 "$work/page.html" >&2; exit 1; }
  PATHS="$work/paths" COOKIE="$cookie" wrk -t1 -c1 -d"${PAGE_SECONDS}s" --latency \
    -s benches/triage_query.lua "http://$SERVER_ADDR" >"$work/wrk.log"
  if grep -q "Non-2xx" "$work/wrk.log"; then
    echo "$name: some answers were not 2xx" >&2
    cat "$work/wrk.log" >&2
    exit 1
  fi
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$work/wrk.log")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$work/wrk.log")")
  printf '| %s | %s | %s | %s |\n' "$name" "$p50" "$p99" "$bytes"
done
