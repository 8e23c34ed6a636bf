#!/usr/bin/env bash
# What the status page's browser test needs, idempotently: from Debian `chromium` and
# `chromium-driver` (the real browser, driven headless), from PyPI `selenium` (the WebDriver
# client). Selenium Manager is never asked to download a driver: the test names Debian's
# /usr/bin/chromedriver. A second run only checks and takes about a second.
# Usage: scripts/ci/setup-browser.sh      (root; Debian; apt and PyPI reachable)
set -euo pipefail

STEP=browser
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
PY=$(command -v python3) || die "no python3 on PATH"
mkdir -p "$STATE"

apt_install chromium chromium-driver
command -v chromium >/dev/null || die "chromium missing after installing it"
command -v chromedriver >/dev/null || die "chromedriver missing after installing chromium-driver"

if ! (cd / && "$PY" -c "import selenium") 2>/dev/null; then
  say "pip install selenium"
  "$PY" -m pip install -q --disable-pip-version-check selenium >>"$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; die "pip install selenium (log: $LOG)"; }
  (cd / && "$PY" -c "import selenium") || die "selenium still not importable"
fi

# The browser must start headless here (no display, running as root).
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
if ! timeout 60 chromium --headless --no-sandbox --disable-gpu --no-first-run \
    --disable-background-networking --user-data-dir="$profile" --dump-dom about:blank \
    >>"$LOG" 2>&1; then
  tail -n 20 "$LOG" >&2
  die "chromium --headless does not start (log: $LOG)"
fi
summary "ok: $(chromium --version 2>/dev/null | head -n 1), $(chromedriver --version | head -n 1 | cut -d' ' -f1-2), selenium $(cd / && "$PY" -c 'import selenium; print(selenium.__version__)')"
