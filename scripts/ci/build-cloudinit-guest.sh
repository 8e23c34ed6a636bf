#!/usr/bin/env bash
# Build the cloud-init test guest: a Debian trixie VM with Debian's own cloud-init, systemd as
# PID 1, ifupdown with ISC dhclient and systemd-networkd, that tests/integration/
# test_cloudinit_guest.py boots through factory cycles as a vm-raw machine (kernel, initrd and
# root_image below) to prove that an unchanged cloud image contextualises itself from Vac's
# metadata service and config drive. Outputs in OUTDIR:
#   vmlinuz, initrd.img  the guest's kernel (linux-image-cloud-amd64) and its initramfs
#   rootfs.img           raw ext4 image (sparse), made with `mkfs.ext4 -d` (no loop mount); the
#                        factory boots a qcow2 overlay of it, so it stays clean
#   versions             kernel, systemd, cloud-init, ifupdown, isc-dhcp-client of the guest
# Nothing in the image names Vac's datasources: cloud-init's ds-identify finds them from what
# the factory gives the VM (config drive, SMBIOS product name, or the kernel command line).
# The one test hook: with "vac.netstack=eni" or "vac.netstack=networkd" on the kernel command
# line, vac-netstack.service (before cloud-init-local) tells cloud-init which renderer to use,
# so one image proves both network stacks (both are enabled; each configures only what it is
# given).
# Skipped when the outputs exist and were built by a script of the same content
# (OUTDIR/.script-sha256). Shares the debootstrap and .deb caches of build-v2-guest.sh (same
# suite and mirror). First build: a few minutes; cached: under a second.
# Usage: scripts/ci/build-cloudinit-guest.sh [OUTDIR]  (default /var/lib/vac-test/cloudguest; root)
set -euo pipefail

STEP=cloudinit-guest
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
OUTDIR=${1:-$STATE/cloudguest}
CACHE=/var/cache/vac-test/v2guest
SUITE=trixie
IMAGE_SIZE=2G
SELF=$(readlink -f "$0")
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/guestlib.sh"

# systemd-networkd is part of trixie's systemd package.
BASE="systemd systemd-sysv dbus udev kmod passwd ca-certificates"
PACKAGES="linux-image-cloud-amd64 initramfs-tools cloud-init ifupdown isc-dhcp-client
openssh-server iproute2 netbase procps e2fsprogs systemd-resolved"
OUTPUTS="vmlinuz initrd.img rootfs.img versions"

[ "$(id -u)" = 0 ] || die "run as root"
sum=$(cat "$SELF" "$(dirname "$SELF")/guestlib.sh" | sha256sum | cut -d' ' -f1)
fresh=yes
for f in $OUTPUTS; do [ -s "$OUTDIR/$f" ] || fresh=no; done
[ "$(cat "$OUTDIR/.script-sha256" 2>/dev/null)" = "$sum" ] || fresh=no
if [ "$fresh" = yes ]; then
  summary "ok: $OUTDIR up to date ($(tr '\n' ' ' <"$OUTDIR/versions"))"
  exit 0
fi

apt_install debootstrap e2fsprogs
mirror=$(debian_mirror)
work=$(mktemp -d /var/tmp/vac-cloudguest.XXXXXX)
root=$work/root
trap guest_cleanup EXIT
guest_debootstrap "$SUITE" "$mirror" "$BASE"
say "apt-get install in the guest: $(echo "$PACKAGES" | wc -w) packages"
# shellcheck disable=SC2086  # the list is meant to split
guest_apt_install $PACKAGES

# ---- what a cloud image has, and the one test hook --------------------------------------------
in_root passwd -l root >/dev/null
: >"$root/etc/hostname"                  # cloud-init sets it from the datasource
printf '127.0.0.1 localhost\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
rm -f "$root/etc/network/interfaces.d/"* "$root/etc/systemd/network/"*.network
printf 'auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n' \
  >"$root/etc/network/interfaces"
for unit in systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_reap.service serial-getty@ttyS0.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# ssh host keys are made by cloud-init at first boot, as on a cloud image
rm -f "$root"/etc/ssh/ssh_host_*
# Both stacks are enabled, as on an image that has both: each acts only on what it is given
# (ifupdown on /etc/network/interfaces.d, networkd on /etc/systemd/network), and cloud-init
# renders for one of them. No wait-online: nothing on this image needs the network online.
in_root systemctl enable systemd-networkd.service networking.service >>"$LOG" 2>&1
in_root systemctl disable systemd-networkd-wait-online.service >>"$LOG" 2>&1 || true
cat >"$root/usr/local/sbin/vac-netstack" <<'NETSTACK'
#!/bin/sh
# vac.netstack=eni|networkd on the kernel command line: the renderer cloud-init writes for and
# the activator it brings interfaces up with.
# Without it, cloud-init chooses as on any Debian image.
stack=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^vac\.netstack=//p')
case "$stack" in
  eni|networkd) printf 'system_info:\n  network:\n    renderers: [%s]\n    activators: [%s]\n' \
                  "$stack" "$stack" >/etc/cloud/cloud.cfg.d/95-vac-netstack.cfg ;;
esac
NETSTACK
chmod 755 "$root/usr/local/sbin/vac-netstack"
cat >"$root/etc/systemd/system/vac-netstack.service" <<'UNIT'
[Unit]
Description=Vac test hook: the network stack cloud-init renders for
DefaultDependencies=no
Before=cloud-init-local.service network-pre.target
After=local-fs.target

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vac-netstack

[Install]
WantedBy=cloud-init-local.service
UNIT
in_root systemctl enable vac-netstack.service >>"$LOG" 2>&1

# ---- outputs ------------------------------------------------------------------------------
kver=$(guest_kernel)
{
  echo "kernel $kver"
  for p in systemd cloud-init ifupdown isc-dhcp-client; do
    echo "$p $(in_root dpkg-query -W -f='${Version}' "$p")"
  done
} >"$work/versions"
guest_image "$kver" "$OUTDIR" "$IMAGE_SIZE" vac-cloud-root
cp "$work/versions" "$OUTDIR/versions.new"
for f in $OUTPUTS; do mv "$OUTDIR/$f.new" "$OUTDIR/$f"; done
chmod 644 "$OUTDIR"/*
echo "$sum" >"$OUTDIR/.script-sha256"
summary "ok: built $OUTDIR ($(tr '\n' ' ' <"$OUTDIR/versions"))"
