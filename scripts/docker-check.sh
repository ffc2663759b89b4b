#!/usr/bin/env bash
# Builds the Dockerfile's build stage the way Docker would, without Docker (these
# machines have no engine): copies exactly what the stage's COPY lines name (refusing
# any the .dockerignore keeps out of the context) into an empty dir, runs the stage's
# RUN command there, checks the binary needs no library the runtime image lacks, then
# starts it with the runtime stage's ENTRYPOINT, CMD and ENV on a temp data dir and asks
# /healthz and /readyz. Fails whenever the Dockerfile and the tree drift apart.
#
# The target dir is reused (CARGO_TARGET_DIR=target), so a tree already built in
# release costs one recompile of the crashbox crate, not of its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The Dockerfile, read as Docker reads it: instructions with their continuation lines
# joined, split into stages; prints shell-quoted assignments for the steps below.
assignments=$(python3 - "$ROOT" "$work" <<'PY'
import fnmatch, json, os, shlex, sys
root, work = sys.argv[1], sys.argv[2]
lines, cur = [], ""
for raw in open(os.path.join(root, "Dockerfile")):
    line = raw.rstrip("\n")
    if not cur and (not line.strip() or line.lstrip().startswith("#")):
        continue
    if line.endswith("\\"):
        cur += line[:-1] + " "
        continue
    lines.append((cur + line).strip())
    cur = ""
stages = []
for line in lines:
    op, _, rest = line.partition(" ")
    op = op.upper()
    if op == "FROM":
        stages.append({"from": rest, "steps": []})
    elif stages:
        stages[-1]["steps"].append((op, rest.strip()))
if len(stages) != 2 or " as " not in stages[0]["from"].lower():
    sys.exit("docker-check: expected a named build stage and a runtime stage")
build, runtime = stages

# .dockerignore: the last pattern that matches a path decides; `!` re-includes.
rules = []
ignore = os.path.join(root, ".dockerignore")
if os.path.exists(ignore):
    for line in open(ignore):
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").strip("/")))
def excluded(path):
    parts = path.strip("/").split("/")
    out = False
    for negate, pattern in rules:
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:i]), pattern):
                out = not negate
                break
    return out

workdir, copies, runs = "/", [], []
for op, rest in build["steps"]:
    if op == "WORKDIR":
        workdir = rest
    elif op == "COPY":
        if rest.startswith("--"):
            sys.exit(f"docker-check: COPY flags are not emulated: {rest}")
        args = json.loads(rest) if rest.startswith("[") else rest.split()
        *sources, dest = args
        for src in sources:
            if excluded(src):
                sys.exit(f"docker-check: COPY {src}: the .dockerignore keeps it out of the context")
            if not os.path.exists(os.path.join(root, src)):
                sys.exit(f"docker-check: COPY {src}: not in the tree")
            copies.append((src, dest))
    elif op == "RUN":
        runs.append(rest)
    elif op not in ("ARG", "ENV", "LABEL"):
        sys.exit(f"docker-check: build stage instruction {op} is not emulated")

env, entry, cmd = {}, [], []
for op, rest in runtime["steps"]:
    if op == "ENV":
        for pair in shlex.split(rest):
            key, _, value = pair.partition("=")
            env[key] = value
    elif op == "ENTRYPOINT":
        entry = json.loads(rest)
    elif op == "CMD":
        cmd = json.loads(rest)
if not any("/target/release/crashbox" in rest for op, rest in runtime["steps"] if op == "COPY"):
    sys.exit("docker-check: the runtime stage does not copy target/release/crashbox")

ctx = os.path.join(work, "ctx")
print(f"CTX={shlex.quote(ctx)}")
print(f"WORKDIR_IN_IMAGE={shlex.quote(workdir)}")
print("COPIES=(" + " ".join(shlex.quote(f"{s}\t{d}") for s, d in copies) + ")")
print("RUNS=(" + " ".join(shlex.quote(r) for r in runs) + ")")
print("ENVS=(" + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + ")")
print("ARGS=(" + " ".join(shlex.quote(a) for a in entry[1:] + cmd) + ")")
print(f"ENTRY={shlex.quote(entry[0] if entry else '')}")
PY
)
eval "$assignments"

# The build context as the stage sees it, relative to its WORKDIR.
mkdir -p "$CTX"
for copy in "${COPIES[@]}"; do
  src=${copy%%$'\t'*}
  dest=${copy#*$'\t'}
  case "$dest" in
    /*) target="$CTX/${dest#"$WORKDIR_IN_IMAGE"}" ;;
    *) target="$CTX/$dest" ;;
  esac
  if [ -d "$src" ]; then
    mkdir -p "$target"
    cp -a "$src/." "$target/"
  else
    case "$dest" in */) mkdir -p "$target"; cp -a "$src" "$target" ;; *) mkdir -p "$(dirname "$target")"; cp -a "$src" "$target" ;; esac
  fi
done
for run in "${RUNS[@]}"; do
  echo "docker-check: RUN $run"
  (cd "$CTX" && CARGO_TARGET_DIR="$ROOT/target" bash -c "$run")
done
binary="$ROOT/target/release/crashbox"
[ "$ENTRY" = crashbox ] || { echo "docker-check: ENTRYPOINT is not crashbox"; exit 1; }

# The runtime image is debian:bookworm-slim plus ca-certificates: the binary may link
# only what that image has.
allowed='^(linux-vdso|libc|libm|libgcc_s|libstdc\+\+|libpthread|libdl|librt|ld-linux-x86-64)\.so'
extra=$(ldd "$binary" | awk '{print $1}' | sed 's#.*/##' | grep -Ev "$allowed" || true)
if [ -n "$extra" ]; then
  echo "docker-check: the binary needs libraries the runtime image lacks: $extra"
  exit 1
fi

# Start it as the image would: the CMD's arguments and the ENV, with the image's
# paths under a temp root and the listen port made free (the address stays the CMD's).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
args=()
for arg in "${ARGS[@]}"; do
  args+=("$(echo "$arg" | sed -E "s/:8080$/:$port/")")
done
envs=()
for pair in "${ENVS[@]}"; do
  key=${pair%%=*}
  value=${pair#*=}
  case "$value" in /*) value="$work/root$value"; mkdir -p "$value" ;; esac
  envs+=("$key=$value")
done
env "${envs[@]}" "$binary" "${args[@]}" >"$work/server.out" 2>"$work/server.log" &
server=$!
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
  kill -0 "$server" 2>/dev/null || break
  sleep 0.1
done
health=$(curl -s "http://127.0.0.1:$port/healthz" || true)
ready=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz" || true)
if [ "$health" != '{"status":"ok"}' ] || [ "$ready" != 200 ]; then
  echo "docker-check: the image's command did not serve (healthz: $health, readyz: $ready); its log:"
  cat "$work/server.log"
  exit 1
fi
for pair in "${envs[@]}"; do
  case "$pair" in CRASHBOX_DATA_DIR=*) [ -f "${pair#*=}/crashbox.db" ] || { echo "docker-check: no store in the data volume"; exit 1; } ;; esac
done
echo "docker-check: the build stage builds and '${ARGS[*]}' serves /healthz and /readyz"
