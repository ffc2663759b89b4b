#!/usr/bin/env bash
# Latency of the offline CLI on a typical report: `crashbox symbolicate` of a 60-frame
# Apple .ips for LargeApp, with its SymCache already in the on-disk cache, against
# the baseline of `crashbox --version` (process start and exit) in the same run.
#
#   bash benches/cli-latency.sh           # RUNS=20 by default
#
# The .ips (written to the scratch dir) has LargeApp's UUID and real function
# addresses from `llvm-nm -n` (a few instructions into each function): a crashed
# thread of 40 frames, one of 12 app frames plus 2 system frames, one of 6; 60 frames.
# The cache is warmed once (`--cache-dir` in the scratch dir); then RUNS timed runs of
# each command, alternating, with Python's time.perf_counter around subprocess.run.
# Target: median under 50 ms.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNS="${RUNS:-20}"

build_release
bash "$ROOT/benches/gen-large-dsym.sh" | sed 's/^/  /'

TMP=$(mktemp -d "${TMPDIR:-/tmp}/crashbox-cli.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
machine_info

uuid=$(llvm-dwarfdump-14 --uuid "$DWARF" | awk '{print tolower($2); exit}')
llvm-nm-14 -n --defined-only "$LARGE/LargeApp" >"$TMP/nm.txt"
python3 - "$TMP/nm.txt" "$uuid" "$TMP/large.ips" <<'EOF'
import json, random, sys
nm, uuid, dest = sys.argv[1:4]
BASE_VM = 0x100000000          # __TEXT vmaddr of the executable
LOAD = 4363911168              # where it was loaded in the crashed process
syms = []
for line in open(nm):
    parts = line.split(maxsplit=2)
    if len(parts) == 3 and parts[1] in "tT":
        syms.append((int(parts[0], 16), parts[2].strip()))
syms.sort()
rng = random.Random(60)
def app_frame():
    while True:
        i = rng.randrange(len(syms) - 1)
        start, end = syms[i][0], syms[i + 1][0]
        if end - start >= 16:
            return {"imageOffset": start - BASE_VM + 4 * rng.randrange(1, (end - start) // 4), "imageIndex": 0}
text_size = (syms[-1][0] - BASE_VM + 0x4000) & ~0x3FFF
threads = [
    {"triggered": True, "id": 880515, "queue": "com.apple.main-thread",
     "frames": [app_frame() for _ in range(40)]},
    {"id": 880602, "frames": [
        {"imageOffset": 3284, "symbol": "mach_msg2_trap", "symbolLocation": 8, "imageIndex": 1},
        {"imageOffset": 80204, "symbol": "mach_msg2_internal", "symbolLocation": 80, "imageIndex": 1},
    ] + [app_frame() for _ in range(12)]},
    {"id": 880603, "frames": [app_frame() for _ in range(6)]},
]
path = "/private/var/containers/Bundle/Application/5D0E3F6A-2B7C-4E19-9A41-6F3C2D8B7E10/LargeApp.app/LargeApp"
header = {"app_name": "LargeApp", "timestamp": "2026-11-01 10:00:00.00 +0000", "app_version": "1.0",
          "slice_uuid": uuid, "build_version": "1", "platform": 2, "bundleID": "com.crashbox.large",
          "share_with_app_devs": 0, "is_first_party": 0, "bug_type": "309",
          "os_version": "iPhone OS 17.1 (21B74)", "roots_installed": 0,
          "incident_id": "2C6A3B4D-8E5F-4A71-9B0C-D1E2F3A4B5C6", "name": "LargeApp"}
body = {
    "uptime": 86400, "procRole": "Foreground", "version": 2, "userID": 501, "deployVersion": 210,
    "modelCode": "iPhone15,2", "coalitionID": 1234,
    "osVersion": {"isEmbedded": True, "train": "iPhone OS 17.1", "releaseType": "User", "build": "21B74"},
    "captureTime": "2026-11-01 09:59:59.8765 +0000", "incident": header["incident_id"], "pid": 4242,
    "cpuType": "ARM-64", "roots_installed": 0, "bug_type": "309",
    "procLaunch": "2026-11-01 09:59:58.1234 +0000", "procName": "LargeApp", "procPath": path,
    "bundleInfo": {"CFBundleShortVersionString": "1.0", "CFBundleVersion": "1", "CFBundleIdentifier": "com.crashbox.large"},
    "parentProc": "launchd", "parentPid": 1,
    "exception": {"codes": "0x0000000000000001, 0x0000000000000000", "rawCodes": [1, 0], "type": "EXC_BAD_ACCESS",
                  "signal": "SIGSEGV", "subtype": "KERN_INVALID_ADDRESS at 0x0000000000000000"},
    "termination": {"flags": 0, "code": 11, "namespace": "SIGNAL", "indicator": "Segmentation fault: 11",
                    "byProc": "exc handler", "byPid": 4242},
    "faultingThread": 0,
    "threads": threads,
    "usedImages": [
        {"source": "P", "arch": "arm64", "base": LOAD, "size": text_size, "uuid": uuid, "path": path, "name": "LargeApp"},
        {"source": "P", "arch": "arm64e", "base": 8214773760, "size": 237568,
         "uuid": "9e9a31f4-7c65-3b8e-a1d2-64f0c3b5e718", "path": "/usr/lib/system/libsystem_kernel.dylib",
         "name": "libsystem_kernel.dylib"},
    ],
    "sharedCache": {"base": 7661027328, "size": 3537059840, "uuid": "4d7f0e3a-51c2-3b9d-8e6f-2a1b0c9d8e7f"},
    "legacyInfo": {"threadTriggered": {"queue": "com.apple.main-thread"}},
}
with open(dest, "w") as f:
    f.write(json.dumps(header) + "\n" + json.dumps(body, indent=2) + "\n")
print(f"report: {dest}: {sum(len(t['frames']) for t in threads)} frames, uuid {uuid}")
EOF

python3 - "$CRASHBOX" "$LARGE/LargeApp.app.dSYM" "$TMP/large.ips" "$TMP/cache" "$RUNS" <<'EOF'
import json, statistics, subprocess, sys, time
crashbox, dsym, report, cache, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
sym = [crashbox, "symbolicate", "--dsyms", dsym, "--cache-dir", cache, "--format", "json", report]
ver = [crashbox, "--version"]

# Warm the on-disk SymCache cache once, and check the answer.
t = time.perf_counter()
out = subprocess.run(sym, check=True, capture_output=True).stdout
cold = time.perf_counter() - t
crash = json.loads(out)
frames = [f for t in crash["threads"] for f in t["frames"]]
# Inlined frames are extra entries the symbolicator adds: count the report's own frames.
done = sum(1 for f in frames if f.get("status") == "symbolicated" and not f.get("inlined"))
print(f"warm-up run (builds the SymCache into the cache): {cold:.2f} s; "
      f"{len(frames)} frames out (inlines included), {done} of the report's symbolicated")
# Timing a run that found no debug file would measure the wrong thing. The report has
# 58 app frames (and 2 in system images, which stay unsymbolicated).
if done < 58:
    sys.exit(f"only {done} report frames symbolicated; the dSYM does not match the report")

def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1e3

times = {"symbolicate": [], "version": []}
for _ in range(runs):
    times["symbolicate"].append(timed(sym))
    times["version"].append(timed(ver))

def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]

print(f"{runs} runs each (ms):")
for name, xs in times.items():
    print(f"  {name:<12} median {statistics.median(xs):7.1f}  p90 {p90(xs):7.1f}  min {min(xs):7.1f}  max {max(xs):7.1f}")
s, v = statistics.median(times["symbolicate"]), statistics.median(times["version"])
print(f"symbolicate / --version (medians) = {s / v:.1f}x; symbolicate - --version = {s - v:.1f} ms")
print(f"target median < 50 ms: {'met' if s < 50 else 'MISSED'} ({s:.1f} ms; p90 {p90(times['symbolicate']):.1f} ms)")
EOF
