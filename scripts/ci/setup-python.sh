#!/usr/bin/env bash
# Install the Python side of the test environment, idempotently:
#   - Debian build dependencies of the PyPI packages that build from source
#     (pycurl: libcurl/openssl headers; libvirt-python: libvirt-dev + pkg-config);
#   - from PyPI, into the `python3` on PATH: pytest hypothesis pycurl Jinja2 docker
#     spython libvirt-python pycdlib;
#   - the repository itself with `pip install -e .` (redone only when setup.py changes).
# A second run only checks (dpkg-query, one python3 import) and takes about a second.
# Usage: scripts/ci/setup-python.sh      (root; Debian; apt and PyPI reachable)
set -euo pipefail

STEP=python
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
REPO=$(cd "$(dirname "$0")/../.." && pwd)
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
PY=$(command -v python3) || die "no python3 on PATH"
mkdir -p "$STATE"

# Import names of the PyPI packages (pip name -> module name).
MODULES="pytest hypothesis pycurl jinja2 docker spython libvirt pycdlib cryptography"
PIP_PACKAGES="pytest hypothesis pycurl Jinja2 docker spython libvirt-python pycdlib cryptography"

if ! (cd / && "$PY" -c "import $(echo "$MODULES" | tr ' ' ',')") 2>/dev/null; then
  deps=(gcc pkg-config libcurl4-openssl-dev libssl-dev libvirt-dev)
  # python3-dev only when this interpreter ships no headers of its own (pyenv builds do).
  inc=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  [ -f "$inc/Python.h" ] || deps+=(python3-dev)
  apt_install "${deps[@]}"
  say "pip install $PIP_PACKAGES"
  # shellcheck disable=SC2086  # the list is meant to split
  "$PY" -m pip install -q --disable-pip-version-check $PIP_PACKAGES >>"$LOG" 2>&1 \
    || { tail -n 30 "$LOG" >&2; die "pip install (log: $LOG)"; }
  (cd / && "$PY" -c "import $(echo "$MODULES" | tr ' ' ',')") || die "modules still not importable"
fi

# The repository, editable; the stamp holds the interpreter and setup.py's checksum.
if [ -f "$REPO/setup.py" ]; then
  want="$PY $REPO $(sha256sum "$REPO/setup.py" | cut -d' ' -f1)"
  have=$(cat "$STATE/pip-editable" 2>/dev/null || true)
  where=$(cd / && "$PY" -c 'import os, importlib.util as u; s = u.find_spec("vac")
print(os.path.dirname(os.path.dirname(s.origin)) if s and s.origin else "")' 2>/dev/null || true)
  if [ "$want" != "$have" ] || [ "$where" != "$REPO" ]; then
    say "pip install -e $REPO"
    "$PY" -m pip install -q --disable-pip-version-check -e "$REPO" >>"$LOG" 2>&1 \
      || { tail -n 30 "$LOG" >&2; die "pip install -e $REPO (log: $LOG)"; }
    echo "$want" >"$STATE/pip-editable"
  fi
  summary "ok: $("$PY" --version 2>&1), test and backend packages, vac editable from $REPO"
else
  summary "ok: $("$PY" --version 2>&1), test and backend packages (no setup.py in $REPO)"
fi
