# Shared by benches/ingest.sh and benches/many-objects.sh; source it, do not run it.
# Starts a crashbox server in a scratch dir, samples its memory, uploads, stops it.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BENCH_DIR="${CRASHBOX_BENCH_DIR:-$HOME/.cache/crashbox-bench}"
LARGE="$BENCH_DIR/large"
DWARF="$LARGE/LargeApp.app.dSYM/Contents/Resources/DWARF/LargeApp"
DSYMS_ZIP="$LARGE/LargeApp.dSYMs.zip"
CRASHBOX="${CRASHBOX:-$ROOT/target/release/crashbox}"

SERVER_PID=""
SERVER_ADDR=""
SERVER_TOKEN=""
SAMPLER_PID=""

# need_tools [PACKAGE...]: installs curl, time and the named packages (each providing a
# command of the same name) when missing.
need_tools() {
    local missing=() tool
    command -v curl >/dev/null || missing+=(curl)
    [ -x /usr/bin/time ] || missing+=(time)
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        echo "bench: installing ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

build_release() {
    [ -n "${SKIP_BUILD:-}" ] || (cd "$ROOT" && cargo build --release --bins --examples --quiet)
}

# start_server DIR: a fresh server with its data and dsyms dirs under DIR.
start_server() {
    local dir=$1
    mkdir -p "$dir"
    RUST_LOG=info "$CRASHBOX" serve --listen 127.0.0.1:0 --data-dir "$dir/data" --dsyms-dir "$dir/dsyms" \
        >"$dir/server.out" 2>"$dir/server.log" &
    SERVER_PID=$!
    local i
    for i in $(seq 1 200); do
        SERVER_ADDR=$(sed -n 's/.*crashbox listening on http:\/\/\([^ ]*\).*/\1/p' "$dir/server.log" 2>/dev/null | head -1 || true)
        if [ -n "$SERVER_ADDR" ] && [ -s "$dir/data/admin-token" ]; then
            SERVER_TOKEN=$(tr -d '[:space:]' <"$dir/data/admin-token")
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "bench: the server did not start; its log:" >&2
    cat "$dir/server.log" >&2
    return 1
}

stop_server() {
    stop_sampler
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}

# start_sampler INTERVAL OUT [PID]: appends "seconds VmRSS VmHWM RssAnon RssFile" (kB)
# for PID (default: the server) every INTERVAL seconds until stop_sampler or its exit.
start_sampler() {
    local interval=$1 out=$2 pid=${3:-$SERVER_PID}
    : >"$out"
    (
        t0=$(date +%s.%N)
        while [ -r "/proc/$pid/status" ]; do
            awk -v t0="$t0" -v now="$(date +%s.%N)" '
                /^VmRSS:/ {r=$2} /^VmHWM:/ {h=$2} /^RssAnon:/ {a=$2} /^RssFile:/ {f=$2}
                END {if (r) printf "%.2f %d %d %d %d\n", now - t0, r, h, a, f}' \
                "/proc/$pid/status" >>"$out" 2>/dev/null || true
            sleep "$interval"
        done
    ) </dev/null >/dev/null 2>&1 &
    SAMPLER_PID=$!
}

stop_sampler() {
    if [ -n "$SAMPLER_PID" ]; then
        kill "$SAMPLER_PID" 2>/dev/null || true
        wait "$SAMPLER_PID" 2>/dev/null || true
        SAMPLER_PID=""
    fi
}

# vm_kb FIELD: the server's current VmRSS / VmHWM in kB.
vm_kb() {
    awk -v f="$1:" '$1 == f {print $2}' "/proc/$SERVER_PID/status"
}

# upload FILE RESPONSE [QUERY]: POSTs FILE to /api/v1/dsyms; prints "HTTP_CODE SECONDS"
# (curl's time_total: from connecting to the last byte of the answer).
upload() {
    local file=$1 response=$2 query=${3:-}
    curl -sS -o "$response" -w '%{http_code} %{time_total}\n' \
        -H "Authorization: Bearer $SERVER_TOKEN" -H "Content-Type: application/octet-stream" \
        --data-binary @"$file" "http://$SERVER_ADDR/api/v1/dsyms$query"
}

machine_info() {
    echo "machine: $(nproc) cores ($(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr)"
    echo "rustc: $(rustc --version); crashbox at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
    # Other work on the machine skews absolute figures (ratios less so): say what ran.
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); busiest other processes:" \
        "$(ps -eo pcpu=,comm= --sort=-pcpu | head -3 | awk '{printf "%s %s%%; ", $2, $1}')"
}
