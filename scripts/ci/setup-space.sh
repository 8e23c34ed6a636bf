#!/usr/bin/env bash
# What the space tests need, idempotently: iproute2 (`ip netns`, veth, bridge) for the test
# that runs three factories as separate network hosts, and a working `ip netns add`.
# A second run only checks and takes well under a second.
# Usage: scripts/ci/setup-space.sh      (root; Debian)
set -euo pipefail

STEP=space
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"
command -v ip >/dev/null 2>&1 || apt_install iproute2
probe="vacsetup$$"
ip netns add "$probe" || die "ip netns add does not work here"
ip netns del "$probe"
summary "ip (iproute2) present, network namespaces work"
