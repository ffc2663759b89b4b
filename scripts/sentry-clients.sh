#!/usr/bin/env bash
# Installs the real Sentry clients the Sentry-compatibility tests run (tests/e2e/sentry.rs)
# into git-ignored venvs under target/, from the Python package registry, when missing:
#   target/sentry-venv/bin/sentry-cli   sentry-cli 3.8.2
#   target/sentry-venv/bin/python       with sentry-sdk (and brotli, so it can send br)
#   target/sentry-cli-2/bin/sentry-cli  sentry-cli 2.58.6 (the 2.x and legacy paths)
# Each sentry-cli wheel is one statically linked binary; nothing else is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

SENTRY_CLI_3=3.8.2
SENTRY_CLI_2=2.58.6
SENTRY_SDK=2.75.0

venv() {
  local dir=$1
  shift
  if [ ! -x "$dir/bin/python" ]; then
    python3 -m venv "$dir"
  fi
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
}

if ! target/sentry-venv/bin/sentry-cli --version 2>/dev/null | grep -q "$SENTRY_CLI_3" ||
   ! target/sentry-venv/bin/python -c "import sentry_sdk, brotli" 2>/dev/null; then
  echo "installing sentry-cli $SENTRY_CLI_3 and sentry-sdk $SENTRY_SDK into target/sentry-venv"
  venv target/sentry-venv "sentry-cli==$SENTRY_CLI_3" "sentry-sdk==$SENTRY_SDK" brotli==1.2.1
fi
if ! target/sentry-cli-2/bin/sentry-cli --version 2>/dev/null | grep -q "$SENTRY_CLI_2"; then
  echo "installing sentry-cli $SENTRY_CLI_2 into target/sentry-cli-2"
  venv target/sentry-cli-2 "sentry-cli==$SENTRY_CLI_2"
fi
