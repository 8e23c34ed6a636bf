#!/usr/bin/env bash
# Install what the packaging tests need, idempotently: Debian's rpm (rpmbuild, rpm2cpio),
# cpio, systemd-analyze (package systemd), man-db/groff for the man pages, and the test
# dependencies of the Python 3.9 run (pyenv's 3.9, when this machine has one).
# A second run only checks and takes about a second.
# Usage: scripts/ci/setup-packaging.sh [--rpmbuild]      (root; Debian; apt and PyPI reachable)
#   --rpmbuild   only rpm and cpio (what the cgroup v2 guest's run needs to build the RPMs)
set -euo pipefail

STEP=packaging
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"
apt_install rpm cpio
[ "${1:-}" = --rpmbuild ] || apt_install systemd man-db groff-base
command -v rpmbuild >/dev/null || die "rpmbuild missing after installing rpm"
if [ "${1:-}" = --rpmbuild ]; then
  summary "ok: $(rpmbuild --version)"
  exit 0
fi

# Python 3.9 (EL9's system Python) for the unit and contract tests, if pyenv has it here.
py39=$(ls -d /root/.pyenv/versions/3.9*/bin/python3 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$py39" ]; then
  # The contract tests run under 3.9 too, so the backends' libraries are needed there as well.
  MODULES="pytest,hypothesis,pycurl,jinja2,cryptography,pycdlib,docker,spython,libvirt"
  if ! (cd / && "$py39" -c "import $MODULES") 2>/dev/null; then
    apt_install gcc pkg-config libcurl4-openssl-dev libssl-dev libvirt-dev
    say "pip install the test packages for $py39"
    "$py39" -m pip install -q --disable-pip-version-check \
      pytest hypothesis pycurl Jinja2 cryptography pycdlib docker spython libvirt-python \
      >>"$LOG" 2>&1 \
      || { tail -n 30 "$LOG" >&2; die "pip install for $py39 (log: $LOG)"; }
  fi
  summary "ok: $(rpmbuild --version), $("$py39" --version 2>&1) with test packages"
else
  summary "ok: $(rpmbuild --version); no Python 3.9 under pyenv"
fi
