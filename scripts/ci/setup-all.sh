#!/usr/bin/env bash
# Set up the whole real test environment on a Debian 12 machine, in order: Python packages,
# Docker engine + test image, the registry package, libvirtd + QEMU, the test VM guest, Apptainer + its user and
# images. Each step is idempotent: a second run only checks and takes a few seconds.
# Stops at the first failing step and names it. Logs: /var/log/vac-setup.log (apt, pip),
# /var/log/dockerd.log, /var/log/libvirtd.log.
# Usage: scripts/ci/setup-all.sh [guest|rest]      (root)
#   guest  only what the cgroup v2 guest's run needs (the guest, the test VM it boots,
#          rpmbuild): .ci/run starts the guest's tests after it, so that they run beside
#          the rest of the setup
#   rest   every other step (a step already done is only checked)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
T0=$EPOCHREALTIME

run_step() {
  local name=$1
  shift
  if ! "$@"; then
    echo "setup-all: FAILED at step '$name' ($*); see the lines above and /var/log/vac-setup.log" >&2
    exit 1
  fi
}

# apt-get update runs at most once: the first step that needs it leaves the stamp
# /var/lib/vac-test/apt-updated, which the other steps honour for an hour.
phase=${1:-all}
case $phase in
  all|guest|rest) ;;
  *) echo "setup-all: unknown phase '$phase' (all, guest or rest)" >&2; exit 2 ;;
esac
if [ "$phase" != rest ]; then
  run_step v2-guest bash "$here/build-v2-guest.sh"   # the cgroup v2 guest (systemd, cgroup v2)
  run_step test-guest bash "$here/build-test-guest.sh"   # the test VM, booted in that guest too
  run_step rpmbuild bash "$here/setup-packaging.sh" --rpmbuild   # the guest's run builds the RPMs
fi
if [ "$phase" = guest ]; then
  awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "[setup-all] ok: the guest'"'"'s steps (%.1f s)\n", b - a }'
  exit 0
fi
run_step python bash "$here/setup-python.sh"
run_step docker bash "$here/setup-docker.sh"
run_step registry bash "$here/setup-registry.sh"
run_step podman bash "$here/setup-podman.sh"   # Podman's API: rootful, and rootless (vacpodman)
run_step libvirt bash "$here/setup-libvirt.sh"
run_step cloudinit bash "$here/setup-cloudinit.sh"   # Debian's cloud-init, unpacked, for its datasources
run_step test-guest bash "$here/build-test-guest.sh"   # checked again (built by phase guest)
run_step apptainer bash "$here/setup-apptainer.sh"
run_step cloudinit-guest bash "$here/build-cloudinit-guest.sh"   # a Debian cloud image with its own cloud-init
run_step accounting bash "$here/setup-accounting.sh"
run_step packaging bash "$here/setup-packaging.sh"
run_step space bash "$here/setup-space.sh"
run_step browser bash "$here/setup-browser.sh"
awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "[setup-all] ok: all steps of phase '"$phase"' (%.1f s)\n", b - a }'
