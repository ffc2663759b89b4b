#!/usr/bin/env bash
# Generates LargeApp, a large synthetic iOS app, and its dSYM for crashbox's
# benchmarks, with the fixtures' toolchain (clang-14, ld64.lld-14, dsymutil-14; no
# Apple SDK: -nostdlib plus the hand-written fixtures/src/sdk/*.tbd stubs).
#
#   bash benches/gen-large-dsym.sh            # cached: does nothing if the output exists
#   FORCE=1 bash benches/gen-large-dsym.sh    # regenerate
#
# Output, outside git, in ${CRASHBOX_BENCH_DIR:-$HOME/.cache/crashbox-bench}/large/:
#   LargeApp                 the arm64 iOS executable (with its debug map)
#   LargeApp.app.dSYM/       its dSYM (DWARF in Contents/Resources/DWARF/LargeApp)
#   LargeApp.dSYMs.zip       the dSYM zipped like Xcode's dSYMs.zip (deflate)
#   gen-time.txt             how long the last generation took, in seconds
#
# Size knobs (defaults give ~200 MB of DWARF): MODULES (C++ translation units),
# OBJC_FILES (Objective-C files), JOBS (parallel compiles, default 2).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "$HERE/.." && pwd -P)"
BENCH_DIR="${CRASHBOX_BENCH_DIR:-$HOME/.cache/crashbox-bench}"
OUT="$BENCH_DIR/large"
MODULES="${MODULES:-1000}"
OBJC_FILES="${OBJC_FILES:-20}"
JOBS="${JOBS:-2}"

DSYM="$OUT/LargeApp.app.dSYM"
DWARF="$DSYM/Contents/Resources/DWARF/LargeApp"
ZIP="$OUT/LargeApp.dSYMs.zip"

report() {
    local bytes
    bytes=$(stat -c %s "$DWARF")
    echo "gen-large-dsym: $DSYM"
    echo "  DWARF file: $DWARF ($((bytes / 1024 / 1024)) MiB, $bytes bytes)"
    echo "  zip:        $ZIP ($(($(stat -c %s "$ZIP") / 1024 / 1024)) MiB)"
    echo "  uuid:       $(llvm-dwarfdump-14 --uuid "$DWARF" | head -1)"
    [ -f "$OUT/gen-time.txt" ] && echo "  generated in $(cat "$OUT/gen-time.txt") s"
    return 0
}

if [ -z "${FORCE:-}" ] && [ -f "$DWARF" ] && [ -f "$ZIP" ] && [ -f "$OUT/LargeApp" ]; then
    echo "gen-large-dsym: cached (FORCE=1 to regenerate)"
    report
    exit 0
fi

for t in clang-14 ld64.lld-14 dsymutil-14 llvm-dwarfdump-14 python3; do
    command -v "$t" >/dev/null || { echo "gen-large-dsym: $t is missing (apt-get install clang-14 lld-14 llvm-14)" >&2; exit 1; }
done

export ZERO_AR_DATE=1 LC_ALL=C TZ=UTC SOURCE_DATE_EPOCH=0 PYTHONHASHSEED=0
start=$(date +%s.%N)
rm -rf "$OUT"
B="$OUT/build"
mkdir -p "$B/src" "$B/obj"

python3 "$HERE/gen_large_src.py" "$B/src" "$MODULES" "$OBJC_FILES"
echo "gen-large-dsym: generated $MODULES C++ + $OBJC_FILES Objective-C files; compiling with -j$JOBS"

# A Makefile gives parallel, restartable compilation with one clang per file.
COMMON="-target arm64-apple-ios15.0 -g -gdwarf-4 -O1 -fdebug-prefix-map=$B=/large-src \
-fno-stack-protector -fno-exceptions -funwind-tables -Wall -Werror"
{
    echo "OBJS := \$(patsubst src/%.cpp,obj/%.o,\$(wildcard src/*.cpp)) \$(patsubst src/%.m,obj/%.o,\$(wildcard src/*.m)) obj/main.o"
    echo "all: \$(OBJS)"
    echo "obj/%.o: src/%.cpp"
    echo "	@clang-14 $COMMON -std=c++17 -fno-rtti -nostdinc++ -c \$< -o \$@"
    echo "obj/%.o: src/%.m"
    echo "	@clang-14 $COMMON -fno-objc-exceptions -c \$< -o \$@"
    echo "obj/%.o: src/%.c"
    echo "	@clang-14 $COMMON -c \$< -o \$@"
} >"$B/Makefile"
make -s -C "$B" -j"$JOBS" all
compiled=$(date +%s.%N)

# One executable, like an app's main binary; the debug map keeps paths relative
# to the build dir (-oso_prefix), and dsymutil runs from there.
SDK="$ROOT/fixtures/src/sdk"
(
    cd "$B"
    find obj -name '*.o' | sort >objs.txt
    ld64.lld-14 -platform_version ios 15.0 15.0 -arch arm64 -oso_prefix "$B/" -execute \
        -o LargeApp -filelist objs.txt "$SDK/libobjc.tbd" "$SDK/libSystem.tbd"
    dsymutil-14 -j "$JOBS" LargeApp -o "$DSYM"
)
mv "$B/LargeApp" "$OUT/LargeApp"
linked=$(date +%s.%N)

python3 - "$OUT" <<'EOF'
import os, stat, sys, zipfile
out = sys.argv[1]
root = os.path.join(out, "LargeApp.app.dSYM")
dest = os.path.join(out, "LargeApp.dSYMs.zip")
with zipfile.ZipFile(dest + ".tmp", "w") as zf:
    for d, dirs, files in os.walk(root):
        dirs.sort()
        rel = os.path.relpath(d, out)
        info = zipfile.ZipInfo(rel + "/", date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
        zf.writestr(info, b"")
        for name in sorted(files):
            zf.write(os.path.join(d, name), f"{rel}/{name}", compress_type=zipfile.ZIP_DEFLATED,
                     compresslevel=6)
os.replace(dest + ".tmp", dest)
EOF
rm -rf "$B"
end=$(date +%s.%N)
python3 -c "import sys; s,c,l,e=map(float,sys.argv[1:]); print(f'{e-s:.0f}')" \
    "$start" "$compiled" "$linked" "$end" >"$OUT/gen-time.txt"
python3 -c "import sys; s,c,l,e=map(float,sys.argv[1:]); print(f'gen-large-dsym: compile {c-s:.0f} s, link+dsymutil {l-c:.0f} s, zip {e-l:.0f} s, total {e-s:.0f} s')" \
    "$start" "$compiled" "$linked" "$end"
report
