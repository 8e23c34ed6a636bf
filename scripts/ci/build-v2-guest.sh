#!/usr/bin/env bash
# Build the cgroup v2 test guest: a Debian trixie VM with systemd as PID 1 on the
# unified hierarchy, Docker with the systemd cgroup driver, Podman (rootful and rootless),
# Apptainer and libvirtd, in which scripts/ci/run-v2-tests.sh runs what only a systemd
# cgroup v2 host with device-mapper can prove. Outputs in OUTDIR:
#   vmlinuz, initrd.img  the guest's kernel (linux-image-amd64) and its initramfs
#   rootfs.img           raw ext4 image (sparse), made with `mkfs.ext4 -d` (no loop mount);
#                        runs boot a qcow2 overlay of it, so it stays clean
#   cmdline              the kernel command line (root=/dev/vda, console=ttyS0,
#                        systemd.unified_cgroup_hierarchy=1)
#   versions             kernel, systemd, Docker, Apptainer, Podman, crun, libvirt, QEMU,
#                        Python of the guest
# Why trixie and not bookworm: sid's apptainer .deb installs natively (it needs glibc 2.38,
# trixie has 2.41; bookworm would need the private-glibc trick of setup-apptainer.sh), and its
# Docker 26 is nearer the docker-ce EL9 sites run than bookworm's 20.10; systemd 257 and kernel
# 6.12 have everything EL9's (252, 5.14) has for v2 (cgroup.kill, memory.events, delegation).
# What the guest does at boot (units written below):
#   vac-v2-images.service  imports vac-test/busybox:1 into the guest's Docker (as
#                          setup-docker.sh does on the host) once docker.service answers
#   vac-v2-run.service     with "vac.v2run=1" on the kernel command line: mounts the second
#                          disk (/dev/vdb, ext4: the tree under test) at /vac-src, runs
#                          /vac-src/scripts/ci/v2-guest-run.sh (from the tree, so the test
#                          selection changes without a rebuild), writes its exit code to the
#                          console as "VAC-V2: exit N" and powers off
#   vac-v2-podman-images.service  loads the same image into the rootful Podman (podman.socket,
#                          enabled) and into the rootless one of the user vacpodman (its own
#                          podman.socket, in its systemd: the user lingers), through their sockets
# Podman as Debian 13 ships it (crun, netavark, passt for rootless networks; slirp4netns and
# fuse-overlayfs beside them), with the systemd cgroup manager and journald events (the defaults
# on a systemd host; the CI host's cgroupfs and file settings are setup-podman.sh's, not here);
# the user vacpodman with subordinate ranges as setup-podman.sh gives it on the host;
# lvm2 and thin-provisioning-tools (device-mapper, which the guest's kernel has and the CI
# host's sandbox has not: tests/integration/test_lvm.py); e2fsprogs, which Debian 13's minbase
# no longer has: mkfs.ext4 for the machines' scratch file systems (loop or thin LV); xfsprogs
# (mkfs.xfs: tests/integration/test_scratch_quota.py, project quotas, which the CI host's
# kernel cannot mount); libvirtd with QEMU and libvirt-python, for VMs whose disks are LVs
# (tests/integration/test_lvm_libvirt.py: the VMs run under TCG inside this guest's TCG).
# Also in the guest: the user vacsngly (Apptainer runs unprivileged, subuid/subgid ranges), the
# sandbox /var/lib/vac-test/busybox-sandbox, python3 with pytest, hypothesis, docker, spython,
# pycurl, jinja2, cryptography, pycdlib (Debian packages) and dirq (PyPI, not in Debian);
# rpm, so that tests/integration/test_vacd_systemd.py installs the RPMs built on the host.
# Skipped when the outputs exist and were built by a script of the same content
# (OUTDIR/.script-sha256). Downloaded .debs are kept in /var/cache/vac-test/v2guest. First
# build: several minutes (debootstrap's downloads and unpacking); cached: under a second.
# Usage: scripts/ci/build-v2-guest.sh [OUTDIR]    (default /var/lib/vac-test/v2guest; root)
set -euo pipefail

STEP=v2-guest
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
OUTDIR=${1:-$STATE/v2guest}
CACHE=/var/cache/vac-test/v2guest
SUITE=trixie
IMAGE_SIZE=8G
SELF=$(readlink -f "$0")
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
. "$(dirname "${BASH_SOURCE[0]}")/guestlib.sh"

# debootstrap installs only BASE (its own dependency order is fragile with many packages: it
# once failed configuring python3-cryptography); apt installs PACKAGES in the chroot.
BASE="systemd systemd-sysv dbus udev kmod passwd ca-certificates"
PACKAGES="iproute2 procps linux-image-amd64 initramfs-tools docker.io docker-cli containerd runc iptables busybox-static uidmap squashfs-tools
ca-certificates containernetworking-plugins libseccomp2 libsqlite3-0 python3 python3-pytest
python3-hypothesis python3-docker python3-spython python3-pycurl python3-jinja2
python3-cryptography python3-pycdlib python3-requests python3-urllib3 python3-pip
rpm
podman crun conmon netavark aardvark-dns nftables catatonit passt slirp4netns fuse-overlayfs
dbus-user-session libpam-systemd
lvm2 thin-provisioning-tools e2fsprogs xfsprogs
libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-daemon-driver-network
libvirt-daemon-driver-nwfilter qemu-system-x86 python3-libvirt dnsmasq-base"
# Not in Debian: from PyPI into the guest's python3 (the APEL queue of the accounting tests).
PIP_PACKAGES="dirq"
OUTPUTS="vmlinuz initrd.img rootfs.img cmdline versions"

[ "$(id -u)" = 0 ] || die "run as root"
sum=$(cat "$SELF" "$(dirname "$SELF")/guestlib.sh" | sha256sum | cut -d' ' -f1)
fresh=yes
for f in $OUTPUTS; do [ -s "$OUTDIR/$f" ] || fresh=no; done
[ "$(cat "$OUTDIR/.script-sha256" 2>/dev/null)" = "$sum" ] || fresh=no
if [ "$fresh" = yes ]; then
  summary "ok: $OUTDIR up to date ($(tr '\n' ' ' <"$OUTDIR/versions"))"
  exit 0
fi

apt_install debootstrap e2fsprogs qemu-utils qemu-system-x86
mirror=$(debian_mirror)
mkdir -p "$CACHE/apt/lists/partial"

# ---- apptainer from sid (a .deb; its dependencies come from trixie inside the chroot) -------
apt_sid=(-o "Dir::Etc::SourceList=$CACHE/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
         -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache=$CACHE/apt")
app_deb=$(find "$CACHE" -maxdepth 1 -name 'apptainer_*.deb' | sort -V | tail -n 1)
if [ -z "$app_deb" ]; then
  printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s sid main\n' "$mirror" \
    >"$CACHE/apt/sources.list"
  say "apt-get update (sid; lists in $CACHE/apt)"
  apt-get "${apt_sid[@]}" update -q >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "apt-get update of sid"; }
  chown _apt "$CACHE" 2>/dev/null || true
  (cd "$CACHE" && apt-get "${apt_sid[@]}" download -q apptainer/sid >>"$LOG" 2>&1) \
    || die "apt-get download apptainer/sid (log: $LOG)"
  app_deb=$(find "$CACHE" -maxdepth 1 -name 'apptainer_*.deb' | sort -V | tail -n 1)
  [ -n "$app_deb" ] || die "apt-get download apptainer gave no .deb"
fi

work=$(mktemp -d /var/tmp/vac-v2guest.XXXXXX)
root=$work/root
trap guest_cleanup EXIT
guest_debootstrap "$SUITE" "$mirror" "$BASE"
cp "$app_deb" "$root/tmp/"
say "apt-get install in the guest: $(basename "$app_deb") and $(echo "$PACKAGES" | wc -w) packages"
# shellcheck disable=SC2086  # the list is meant to split
guest_apt_install "/tmp/$(basename "$app_deb")" $PACKAGES
rm -f "$root/tmp/$(basename "$app_deb")"
# Wheels made by the host's pip (its certificate setup reaches PyPI), installed offline.
say "pip wheel $PIP_PACKAGES (host), pip install in the guest"
rm -rf "$CACHE/pip" && mkdir -p "$CACHE/pip"
# shellcheck disable=SC2086  # the list is meant to split
python3 -m pip wheel -q --disable-pip-version-check --no-deps -w "$CACHE/pip" $PIP_PACKAGES \
  >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "pip wheel $PIP_PACKAGES (log: $LOG)"; }
mkdir -p "$root/tmp/pip" && cp "$CACHE"/pip/* "$root/tmp/pip/"
# shellcheck disable=SC2086
in_root python3 -m pip install -q --break-system-packages --no-index --no-deps \
  --disable-pip-version-check --find-links /tmp/pip $PIP_PACKAGES >>"$LOG" 2>&1 \
  || { tail -n 20 "$LOG" >&2; die "pip install $PIP_PACKAGES in the guest (log: $LOG)"; }
rm -rf "$root/tmp/pip"
ln -sfn apptainer "$root/usr/bin/singularity"

# ---- users, network, units -----------------------------------------------------------------
in_root useradd --system --create-home --home-dir /var/lib/vacsngly --shell /usr/sbin/nologin \
  --comment "Vac Apptainer containers" vacsngly
uid=$(in_root id -u vacsngly)
for f in subuid subgid; do echo "vacsngly:$((1000000 + uid * 65536)):65536" >>"$root/etc/$f"; done
# The rootless Podman user, as setup-podman.sh makes it on the host (a system user with a
# subordinate range of 65536 ids above every range in /etc/subuid and /etc/subgid, its storage
# on overlay), but with what a systemd host gives it: lingering (logind starts the user's own
# systemd at boot, without a login) and podman.socket enabled there, so the user's API service
# is socket-activated: a crash of the service loses the requests it was serving, and the next
# connection starts it again.
in_root useradd --system --create-home --home-dir /var/lib/vacpodman --shell /usr/sbin/nologin \
  --comment "Vac rootless Podman containers" vacpodman
pm_uid=$(in_root id -u vacpodman)
end=$(awk -F: '{ e = $2 + $3; if (e > m) m = e } END { print m + 0 }' "$root/etc/subuid" "$root/etc/subgid")
[ "$end" -ge 100000 ] || end=100000
for f in subuid subgid; do
  grep -q '^vacpodman:' "$root/etc/$f" || echo "vacpodman:$end:65536" >>"$root/etc/$f"
done
pm_home=$root/var/lib/vacpodman
mkdir -p "$pm_home/.config/containers" "$pm_home/.config/systemd/user/sockets.target.wants"
printf '[storage]\ndriver = "overlay"\n' >"$pm_home/.config/containers/storage.conf"
[ -f "$root/usr/lib/systemd/user/podman.socket" ] || die "the guest's podman has no user unit podman.socket"
ln -sfn /usr/lib/systemd/user/podman.socket \
  "$pm_home/.config/systemd/user/sockets.target.wants/podman.socket"
in_root chown -R vacpodman:vacpodman /var/lib/vacpodman
mkdir -p "$root/var/lib/systemd/linger" && touch "$root/var/lib/systemd/linger/vacpodman"
in_root passwd -d root >/dev/null
echo v2guest >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 v2guest.example.com v2guest\n' >"$root/etc/hosts"
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
ln -sf /dev/null "$root/etc/systemd/system/systemd-timesyncd.service"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$root/etc/systemd/system/apt-daily-upgrade.timer"
ln -sf /dev/null "$root/etc/systemd/system/e2scrub_reap.service"
# No login prompt on the console: it carries the test run's output.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"

# The test busybox image, imported into the guest's Docker at boot (no dockerd in a chroot).
mkdir -p "$root/var/lib/vac-test"
cat >"$root/usr/local/sbin/vac-v2-images" <<'IMAGES'
#!/bin/sh
# Import vac-test/busybox:1 (busybox-static + one symlink per applet) unless it is there.
set -eu
IMAGE=vac-test/busybox:1
docker image inspect "$IMAGE" >/dev/null 2>&1 && exit 0
root=$(mktemp -d)
mkdir -p "$root/bin" "$root/sbin" "$root/usr/bin" "$root/usr/sbin" "$root/etc" "$root/tmp" \
  "$root/proc" "$root/sys" "$root/dev" "$root/root" "$root/var/tmp"
chmod 1777 "$root/tmp" "$root/var/tmp"
cp /bin/busybox "$root/bin/busybox"
/bin/busybox --list-full | while read -r applet; do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
rm -rf "$root"
IMAGES
cat >"$root/etc/systemd/system/vac-v2-images.service" <<'UNIT'
[Unit]
Description=Vac v2 guest: the test image in Docker
After=docker.service
Requires=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vac-v2-images

[Install]
WantedBy=multi-user.target
UNIT
cat >"$root/usr/local/sbin/vac-v2-run" <<'RUN'
#!/bin/sh
# Run the tests of the tree on /dev/vdb, say the exit code on the console, power off.
grep -qw vac.v2run=1 /proc/cmdline || exit 0
rc=99
mkdir -p /vac-src
if mount -t ext4 /dev/vdb /vac-src; then
  if [ -x /vac-src/scripts/ci/v2-guest-run.sh ]; then
    /vac-src/scripts/ci/v2-guest-run.sh >/dev/ttyS0 2>&1
    rc=$?
  else
    echo "VAC-V2: no scripts/ci/v2-guest-run.sh on /dev/vdb" >/dev/ttyS0
  fi
  sync
  umount /vac-src || true
else
  echo "VAC-V2: cannot mount /dev/vdb" >/dev/ttyS0
fi
echo "VAC-V2: exit $rc" >/dev/ttyS0
systemctl --no-block poweroff
RUN
cat >"$root/etc/systemd/system/vac-v2-run.service" <<'UNIT'
[Unit]
Description=Vac v2 guest: run the tests of the tree under test
After=vac-v2-images.service docker.service
Wants=vac-v2-images.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/vac-v2-run
StandardOutput=journal+console
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
UNIT
# The same image in the rootful Podman and in vacpodman's, loaded through each one's API socket
# (so in the service's own cgroup and user namespace, as the tests use it). Not ordered before
# vac-v2-run.service: v2-guest-run.sh waits for it (systemctl start) only when it runs Podman tests.
cat >"$root/usr/local/sbin/vac-v2-podman-images" <<'IMAGES'
#!/bin/sh
# Load vac-test/busybox:1 from the guest's Docker into the rootful and the rootless Podman.
set -eu
export HOME=/root   # podman's client reads its configuration from there; a unit has no HOME
IMAGE=vac-test/busybox:1
TAR=/var/lib/vac-test/busybox-image.tar
uid=$(id -u vacpodman)
if [ ! -s "$TAR" ]; then
  docker save -o "$TAR.new" "$IMAGE"
  mv "$TAR.new" "$TAR"
fi
for sock in /run/podman/podman.sock "/run/user/$uid/podman/podman.sock"; do
  waited=0
  until [ -S "$sock" ]; do   # vacpodman's comes with its systemd, which logind starts
    waited=$((waited + 1))
    [ "$waited" -le 300 ] || { echo "no socket $sock after 300 s" >&2; exit 1; }
    sleep 1
  done
  podman --url "unix://$sock" image exists "$IMAGE" && continue
  podman --url "unix://$sock" load -q -i "$TAR"
  podman --url "unix://$sock" image exists "$IMAGE"
done
IMAGES
cat >"$root/etc/systemd/system/vac-v2-podman-images.service" <<UNIT
[Unit]
Description=Vac v2 guest: the test image in the rootful and the rootless Podman
After=vac-v2-images.service podman.socket user@$pm_uid.service
Requires=vac-v2-images.service
Wants=podman.socket

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vac-v2-podman-images
TimeoutStartSec=900

[Install]
WantedBy=multi-user.target
UNIT
chmod 755 "$root/usr/local/sbin/vac-v2-images" "$root/usr/local/sbin/vac-v2-run" \
  "$root/usr/local/sbin/vac-v2-podman-images"
in_root systemctl enable vac-v2-images.service vac-v2-run.service docker.service \
  vac-v2-podman-images.service podman.socket >>"$LOG" 2>&1

# ---- the Apptainer sandbox image (as setup-apptainer.sh makes it on the host) ---------------
sb=$root/var/lib/vac-test/busybox-sandbox
mkdir -p "$sb"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/tmp}
chmod 1777 "$sb/tmp" "$sb/var/tmp"
cp "$root/bin/busybox" "$sb/bin/busybox"
in_root /bin/busybox --list-full | while read -r applet; do
  [ -e "$sb/$applet" ] || ln -s /bin/busybox "$sb/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$sb/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$sb/etc/group"
touch "$sb/etc/hosts" "$sb/etc/localtime" "$sb/etc/resolv.conf"
chmod -R a+rX "$sb"
chmod 755 "$root/var/lib/vac-test"

# ---- outputs ------------------------------------------------------------------------------
kver=$(guest_kernel)
{
  echo "kernel $kver"
  echo "systemd $(in_root dpkg-query -W -f='${Version}' systemd)"
  echo "docker.io $(in_root dpkg-query -W -f='${Version}' docker.io)"
  echo "apptainer $(in_root dpkg-query -W -f='${Version}' apptainer)"
  echo "podman $(in_root dpkg-query -W -f='${Version}' podman)"
  echo "crun $(in_root dpkg-query -W -f='${Version}' crun)"
  echo "libvirt $(in_root dpkg-query -W -f='${Version}' libvirt-daemon)"
  echo "qemu $(in_root dpkg-query -W -f='${Version}' qemu-system-x86)"
  echo "python3 $(in_root python3 -c 'import platform; print(platform.python_version())')"
} >"$work/versions"
guest_image "$kver" "$OUTDIR" "$IMAGE_SIZE" vac-v2-root
echo "root=/dev/vda rw console=ttyS0 systemd.unified_cgroup_hierarchy=1 net.ifnames=0" >"$OUTDIR/cmdline.new"
cp "$work/versions" "$OUTDIR/versions.new"
for f in $OUTPUTS; do mv "$OUTDIR/$f.new" "$OUTDIR/$f"; done
echo "$sum" >"$OUTDIR/.script-sha256"
summary "ok: built $OUTDIR ($(tr '\n' ' ' <"$OUTDIR/versions"))"
