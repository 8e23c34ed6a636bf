#!/usr/bin/env bash
# Bring up a real libvirtd with QEMU (URI qemu:///system), idempotently:
#   - apt-get install (no recommends) libvirt-daemon-system libvirt-clients qemu-system-x86
#     qemu-utils dnsmasq-base (NAT networks need dnsmasq), and the tools the VM tests use to
#     make guests and boot media: busybox-static cpio genisoimage xorriso isolinux syslinux-common;
#     isc-dhcp-client (dhclient: the DHCP client of Debian's ifupdown guests, which applies the
#     broadcast address the factory network offers; tests/integration/test_vmnetwork_dhcp.py);
#   - /dev/kvm usable by libvirt-qemu (group kvm, mode 0660); note that nested KVM does not
#     boot guests on these machines: domains of type `qemu` (TCG) do;
#   - start `virtlogd -d` and `libvirtd -d` if libvirtd does not answer, detached from this
#     shell (own session, no inherited file descriptor but stdio), and wait until `virsh -c qemu:///system version` answers (60 s at most).
# Usage: scripts/ci/setup-libvirt.sh     (root)
set -euo pipefail

STEP=libvirt
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
URI=qemu:///system
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
daemon_up() { timeout 10 virsh -c "$URI" version >/dev/null 2>&1; }
running() { ps -C "$1" -o stat= 2>/dev/null | grep -q '^[^Z]'; }  # a zombie is not running

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"

apt_install libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils dnsmasq-base \
  busybox-static cpio genisoimage xorriso isolinux syslinux-common iproute2 isc-dhcp-client

if [ -e /dev/kvm ]; then
  getent group kvm >/dev/null || groupadd -r kvm
  [ "$(stat -c %G:%a /dev/kvm)" = kvm:660 ] || { chgrp kvm /dev/kvm && chmod 660 /dev/kvm; }
  id -nG libvirt-qemu 2>/dev/null | grep -qw kvm || usermod -a -G kvm libvirt-qemu
fi

if ! daemon_up; then
  running virtlogd || { say "starting virtlogd"; detached virtlogd -d >>/var/log/virtlogd.log 2>&1; }
  if running libvirtd; then
    say "libvirtd runs but does not answer yet"
  else
    say "starting libvirtd (log: /var/log/libvirtd.log)"
    detached libvirtd -d >>/var/log/libvirtd.log 2>&1
  fi
  deadline=$((SECONDS + 60))
  until daemon_up; do
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 /var/log/libvirtd.log >&2; die "libvirtd not answering after 60 s"; }
    sleep 0.5
  done
fi

summary "ok: $(virsh -c "$URI" version 2>/dev/null | awk '/hypervisor/ { print $3, $4 }' | head -n 1) on $URI, kvm $(stat -c %G:%a /dev/kvm 2>/dev/null || echo absent)"
