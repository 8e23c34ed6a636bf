#!/usr/bin/env bash
# Debian's own cloud-init, unpacked (not installed: no units on this host) for the tests that
# run its EC2 and OpenStack datasources against Vac's metadata service
# (tests/integration/test_cloudinit_datasources.py), idempotently:
#   - apt-get install (no recommends) the Python modules cloud-init imports, for Debian's
#     /usr/bin/python3, and isc-dhcp-client;
#   - apt-get download cloud-init and dpkg-deb -x it into $STATE/cloud-init (its modules are
#     then in $STATE/cloud-init/usr/lib/python3/dist-packages), once; the version is in
#     $STATE/cloud-init/VERSION.
# A second run only checks and takes well under a second.
# Usage: scripts/ci/setup-cloudinit.sh      (root; Debian)
set -euo pipefail

STEP=cloudinit
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
DEST=$STATE/cloud-init
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"
apt_install python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema \
  python3-netifaces python3-oauthlib python3-requests python3-yaml python3-serial isc-dhcp-client

if [ ! -s "$DEST/VERSION" ]; then
  apt_update_once
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  say "apt-get download cloud-init"
  (cd "$work" && apt-get download -q cloud-init >>"$LOG" 2>&1) \
    || { tail -n 20 "$LOG" >&2; die "apt-get download cloud-init (log: $LOG)"; }
  deb=$(ls "$work"/cloud-init_*.deb)
  dpkg-deb -x "$deb" "$work/root" || die "dpkg-deb -x $deb"
  dpkg-deb -f "$deb" Version >"$work/root/VERSION"
  rm -rf "$DEST" && mv "$work/root" "$DEST"
fi
/usr/bin/python3 -c "import sys; sys.path.insert(0, '$DEST/usr/lib/python3/dist-packages'); \
import cloudinit.sources.DataSourceEc2, cloudinit.sources.DataSourceOpenStack" \
  || die "Debian's cloud-init in $DEST does not import with /usr/bin/python3"
summary "ok: cloud-init $(cat "$DEST/VERSION") unpacked in $DEST"
