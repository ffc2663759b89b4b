#!/usr/bin/env bash
# Intake side by side: load/run.sh against this tree's release binary and against a
# baseline commit's, built from git in a cached worktree, one after the other on the
# same machine. Prints both runs and the throughput ratio.
#
#   BASE=54cdb2e DURATION=60s bash benches/load/compare.sh
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$ROOT"
BASE=${BASE:?set BASE to the baseline commit}
DURATION=${DURATION:-60s}
base_dir="$BENCH_DIR/base-$BASE"
if [ ! -x "$base_dir/target/release/crashbox" ]; then
  rm -rf "$base_dir"
  git worktree add --detach "$base_dir" "$BASE" >/dev/null
  # Dependencies shared with this tree are not built twice.
  [ -d "$base_dir/target" ] || cp -a "$ROOT/target" "$base_dir/target" 2>/dev/null || true
  (cd "$base_dir" && cargo build --release --bins --examples --quiet)
fi
build_release
out=$(mktemp -d)
echo "== baseline $BASE"
CRASHBOX="$base_dir/target/release/crashbox" SKIP_BUILD=1 DURATION=$DURATION \
  bash benches/load/run.sh | tee "$out/base.log"
echo "== this tree ($(git describe --always --dirty))"
DURATION=$DURATION bash benches/load/run.sh | tee "$out/head.log"
python3 - "$out/base.log" "$out/head.log" <<'PY'
import re, sys
def rate(path):
    return float(re.search(r"Requests/sec:\s+([\d.]+)", open(path).read()).group(1))
base, head = rate(sys.argv[1]), rate(sys.argv[2])
print(f"reports/s: baseline {base:.0f}, this tree {head:.0f}, ratio {head / base:.2f}")
PY
