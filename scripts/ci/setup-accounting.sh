#!/usr/bin/env bash
# Install what accounting and monitoring need, idempotently: from PyPI `dirq` (the queue SSM's
# ssmsend reads) and `prometheus-client` (the metrics endpoint); from Debian `prometheus` (the
# real server the metrics test starts on a loopback port, with promtool). The Debian package's
# own service is stopped and disabled: the tests run their own Prometheus.
# A second run only checks and takes about a second.
# Usage: scripts/ci/setup-accounting.sh      (root; Debian; apt and PyPI reachable)
set -euo pipefail

STEP=accounting
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
PY=$(command -v python3) || die "no python3 on PATH"
mkdir -p "$STATE"

if ! (cd / && "$PY" -c "import dirq, prometheus_client") 2>/dev/null; then
  say "pip install dirq prometheus-client"
  "$PY" -m pip install -q --disable-pip-version-check dirq prometheus-client >>"$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; die "pip install (log: $LOG)"; }
  (cd / && "$PY" -c "import dirq, prometheus_client") || die "dirq/prometheus_client still not importable"
fi

# The Python 3.9 unit-test run (pyenv's 3.9, when this machine has one) imports them too.
py39=$(ls -d /root/.pyenv/versions/3.9*/bin/python3 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$py39" ] && ! (cd / && "$py39" -c "import dirq, prometheus_client") 2>/dev/null; then
  say "pip install dirq prometheus-client for $py39"
  "$py39" -m pip install -q --disable-pip-version-check dirq prometheus-client >>"$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; die "pip install for $py39 (log: $LOG)"; }
fi

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  # Keep the package's postinst from starting a server on :9090 where systemd is not running.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1; fi
  apt_install prometheus
  [ -n "$made_policy" ] && rm -f "$policy"
fi
command -v prometheus >/dev/null || die "prometheus missing after installing it"
command -v promtool >/dev/null || die "promtool missing after installing prometheus"
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
fi
summary "ok: dirq, prometheus-client, $(prometheus --version 2>&1 | head -n 1)"
