#!/usr/bin/env bash
# Installs what the web UI's browser test (tests/ui/test_ui.py) drives, when missing:
#   /usr/bin/chromium            Debian's Chromium (apt); Playwright's own browser
#                                download cannot work here, and is never attempted
#   target/ui-venv/bin/python    with the Playwright client, pinned to the version that
#                                drives bookworm's chromium
set -euo pipefail
cd "$(dirname "$0")/.."

PLAYWRIGHT=1.65.2

if [ ! -x /usr/bin/chromium ]; then
  echo "installing chromium (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if ! target/ui-venv/bin/python -c "import playwright, sys; from importlib.metadata import version; sys.exit(version('playwright') != '$PLAYWRIGHT')" 2>/dev/null; then
  echo "installing playwright $PLAYWRIGHT into target/ui-venv"
  [ -x target/ui-venv/bin/python ] || python3 -m venv target/ui-venv
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the pip package never downloads a browser itself,
  # but say so for anyone who runs `playwright install` from this venv.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 target/ui-venv/bin/pip install --quiet \
    --disable-pip-version-check "playwright==$PLAYWRIGHT"
fi
