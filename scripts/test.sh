#!/usr/bin/env bash
# The project's one test command (README, .ci/run): unit and end-to-end tests, then the
# shared contract check against a release build for every finished area.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests cross-check symbolication with llvm-symbolizer and dump UUIDs with
# llvm-dwarfdump; install them on a fresh machine.
if ! command -v llvm-dwarfdump >/dev/null || ! command -v llvm-symbolizer >/dev/null; then
  echo "installing llvm-14 tools (llvm-dwarfdump, llvm-symbolizer)"
  apt-get update -qq && apt-get install -y -qq llvm-14 >/dev/null
  for tool in llvm-dwarfdump llvm-symbolizer; do
    command -v "$tool" >/dev/null || ln -sf "/usr/bin/$tool-14" "/usr/local/bin/$tool"
  done
fi

cargo test --all-targets

# The contract check in ../shared/contract runs against a release build. Areas listed
# here are finished; a finished area must not silently break.
cargo build --release
for area in debug-files symbolicate; do
  python3 ../shared/contract/check.py --bin target/release/crashbox --only "$area"
done
