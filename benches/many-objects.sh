#!/usr/bin/env bash
# Memory under a large multi-object upload: does the server's RSS grow with the zip?
#
#   bash benches/many-objects.sh          # COPIES defaults to ~1 GB of objects
#
# Builds (once, cached in $CRASHBOX_BENCH_DIR/many/) a zip of COPIES distinct dSYMs:
# copies of LargeApp's DWARF file, each with the 16 bytes of its LC_UUID load
# command rewritten so every copy has its own debug id (ZIP_STORED, so the zip is
# as large as its contents). Then, in one run:
#   baseline: a fresh server, one upload of LargeApp.dSYMs.zip (one object): VmHWM;
#   many:     a fresh server, one upload of the big zip, VmRSS sampled every 0.5 s.
# Prints the RSS series, its max, and max RSS (many) / peak RSS (one object).
# A ratio near 1 means memory is bounded by the largest object, not the upload.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

need_tools
build_release
bash "$ROOT/benches/gen-large-dsym.sh" | sed 's/^/  /'

dwarf_bytes=$(stat -c %s "$DWARF")
COPIES="${COPIES:-$(((1000000000 + dwarf_bytes - 1) / dwarf_bytes))}"
MANY="$BENCH_DIR/many"
MANY_ZIP="$MANY/LargeApp-x$COPIES.dSYMs.zip"
mkdir -p "$MANY"
if [ ! -f "$MANY_ZIP" ] || [ "$MANY_ZIP" -ot "$DWARF" ]; then
    rm -f "$MANY"/*.zip
    python3 - "$LARGE/LargeApp.app.dSYM" "$COPIES" "$MANY_ZIP" <<'EOF'
import os, struct, sys, zipfile

dsym, copies, dest = sys.argv[1], int(sys.argv[2]), sys.argv[3]
dwarf = os.path.join(dsym, "Contents", "Resources", "DWARF", "LargeApp")
plist = os.path.join(dsym, "Contents", "Info.plist")
data = bytearray(open(dwarf, "rb").read())

def uuid_offset(buf):
    """Offset of the 16 UUID bytes of LC_UUID (cmd 0x1b) in a thin 64-bit Mach-O."""
    magic, _cpu, _sub, _ftype, ncmds, _size = struct.unpack_from("<IiiIII", buf, 0)
    assert magic == 0xFEEDFACF, "not a little-endian 64-bit Mach-O"
    off = 32  # sizeof(mach_header_64)
    for _ in range(ncmds):
        cmd, cmdsize = struct.unpack_from("<II", buf, off)
        if cmd == 0x1B:
            return off + 8
        off += cmdsize
    raise SystemExit("no LC_UUID")

at = uuid_offset(data)
original = bytes(data[at:at + 16])
with zipfile.ZipFile(dest + ".tmp", "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
    for n in range(copies):
        uuid = bytearray(original)
        uuid[12:16] = struct.pack(">I", 0xB0000000 + n)  # distinct per copy
        data[at:at + 16] = uuid
        name = f"LargeApp{n:02d}.app.dSYM"
        zf.write(plist, f"{name}/Contents/Info.plist")
        with zf.open(f"{name}/Contents/Resources/DWARF/LargeApp{n:02d}", "w", force_zip64=True) as out:
            view = memoryview(data)
            for i in range(0, len(view), 1 << 24):
                out.write(view[i:i + (1 << 24)])
        print(f"  copy {n}: uuid {uuid.hex()}")
os.replace(dest + ".tmp", dest)
EOF
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/crashbox-many.XXXXXX")
trap 'stop_server; rm -rf "$TMP"' EXIT
machine_info
many_bytes=$(stat -c %s "$MANY_ZIP")
echo "input: $COPIES distinct objects of $((dwarf_bytes / 1000000)) MB, zip $((many_bytes / 1000000)) MB (stored)"
cat "$DSYMS_ZIP" "$MANY_ZIP" >/dev/null

# Baseline: one object, fresh server.
start_server "$TMP/one"
read -r code one_wall < <(upload "$DSYMS_ZIP" "$TMP/one/response.json")
one_hwm=$(vm_kb VmHWM)
stop_server
[ "$code" = 201 ] || { echo "single upload answered $code" >&2; cat "$TMP/one/response.json" >&2; exit 1; }
rm -rf "$TMP/one/dsyms"

# Many objects, fresh server, sampled.
start_server "$TMP/many"
start_sampler 0.5 "$TMP/many/rss.txt"
read -r code many_wall < <(upload "$MANY_ZIP" "$TMP/many/response.json")
sleep 0.6
many_hwm=$(vm_kb VmHWM)
stop_server
[ "$code" = 201 ] || { echo "many upload answered $code" >&2; cat "$TMP/many/response.json" >&2; exit 1; }
stored=$(python3 -c "import json,sys; print(sum(1 for f in json.load(open(sys.argv[1]))['debug_files'] if f.get('status') == 'stored'))" "$TMP/many/response.json")

python3 - "$TMP/many/rss.txt" "$one_hwm" "$many_hwm" "$one_wall" "$many_wall" "$stored" "$COPIES" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
one_hwm, many_hwm = int(sys.argv[2]), int(sys.argv[3])
one_wall, many_wall = float(sys.argv[4]), float(sys.argv[5])
stored, copies = int(sys.argv[6]), int(sys.argv[7])
series = [(float(t), int(r)) for t, r, *_ in rows]
anon = max((int(row[3]) for row in rows), default=0)
filed = max((int(row[4]) for row in rows), default=0)
print()
print(f"one object: upload {one_wall:.1f} s, server peak RSS (VmHWM) {one_hwm / 1024:.0f} MiB")
print(f"{copies} objects: upload {many_wall:.1f} s, {stored} stored, server peak RSS (VmHWM) {many_hwm / 1024:.0f} MiB")
print("VmRSS every 0.5 s (MiB):")
line = []
for t, r in series:
    line.append(f"{r / 1024:.0f}")
for i in range(0, len(line), 20):
    print("  " + " ".join(line[i:i + 20]))
smax = max(r for _, r in series) if series else 0
print(f"max sampled VmRSS {smax / 1024:.0f} MiB (max RssAnon {anon / 1024:.0f} MiB, max RssFile {filed / 1024:.0f} MiB); VmHWM {many_hwm / 1024:.0f} MiB")
# Growth: peaks of the first and last third of the series.
if len(series) >= 6:
    third = len(series) // 3
    first = max(r for _, r in series[:third])
    last = max(r for _, r in series[-third:])
    print(f"peak VmRSS first third {first / 1024:.0f} MiB, last third {last / 1024:.0f} MiB "
          f"({'grows' if last > first * 1.2 else 'flat'})")
print(f"ratio peak RSS {copies} objects / one object = {many_hwm / one_hwm:.2f}  "
      f"(~1.0 means bounded by the largest object; ~{copies} would mean it grows with the zip)")
print(f"per-object time: {many_wall / copies:.1f} s many vs {one_wall:.1f} s one")
EOF
