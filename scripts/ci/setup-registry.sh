#!/usr/bin/env bash
# Install Debian's docker-registry (the Docker Distribution registry), idempotently, for the
# rolling-update test (tests/integration/test_docker_registry.py), which starts and stops its
# own registry on 127.0.0.1:18650 with a temporary storage directory. The package's own
# service is stopped and disabled: nothing may listen on :5000 behind the tests' back.
# A second run only checks and takes well under a second.
# Usage: scripts/ci/setup-registry.sh      (root; Debian; apt reachable)
set -euo pipefail

STEP=registry
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"

if ! command -v docker-registry >/dev/null; then
  # Keep the package's postinst from starting a registry where systemd is not running.
  policy=/usr/sbin/policy-rc.d
  made_policy=
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod 755 "$policy"; made_policy=1; fi
  apt_install docker-registry
  [ -n "$made_policy" ] && rm -f "$policy"
fi
command -v docker-registry >/dev/null || die "docker-registry missing after installing it"
if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
summary "ok: $(docker-registry --version 2>&1 | head -n 1)"
