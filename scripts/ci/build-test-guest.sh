#!/usr/bin/env bash
# Build the small test VM guest for the libvirt backend's real tests:
#   OUTDIR/vmlinuz     kernel of Debian's linux-image-cloud-amd64 (apt-get download + dpkg -x)
#   OUTDIR/initrd.img  gzip'd newc cpio: busybox-static, the virtio/SCSI/ATA/isofs modules,
#                      /bin/vac-http (HTTP/1.0 over nc) and the /init below
#   OUTDIR/README      the guest's contract (the comment at the top of /init)
# Boot it directly (<kernel>, <initrd>, <cmdline>console=ttyS0</cmdline>), with
# <features><acpi/></features> so that `poweroff -f` ends the domain, and the serial console
# logged to a file. Boots and powers off in a few seconds under TCG (domain type qemu).
# Skipped when the three outputs are newer than this script or were built by the same script
# content (OUTDIR/.script-sha256). The kernel .deb is kept in /var/cache/vac-test.
# Usage: scripts/ci/build-test-guest.sh [OUTDIR]     (default /var/lib/vac-test/guest; root)
set -euo pipefail

STEP=test-guest
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
OUTDIR=${1:-$STATE/guest}
CACHE=/var/cache/vac-test
SELF=$(readlink -f "$0")
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Modules in insmod order (the package has no modules.dep, the guest no modprobe):
# virtio PCI and net, virtio disk, SCSI + CD-ROM (virtio-scsi and IDE CD-ROMs), ISO 9660.
MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover
net_failover virtio_net virtio_blk scsi_common scsi_mod cdrom sr_mod virtio_scsi libata ata_piix
isofs"

[ "$(id -u)" = 0 ] || die "run as root"
# Up to date: all three newer than this script, or built by a script with the same content
# (a fresh clone of the repository makes the script newer without changing it).
sum=$(sha256sum "$SELF" | cut -d' ' -f1)
fresh=yes
for f in README vmlinuz initrd.img; do
  [ -f "$OUTDIR/$f" ] && [ "$OUTDIR/$f" -nt "$SELF" ] || fresh=no
done
if [ "$fresh" = no ] && [ -f "$OUTDIR/README" ] && [ -f "$OUTDIR/vmlinuz" ] && [ -f "$OUTDIR/initrd.img" ] \
  && [ "$(cat "$OUTDIR/.script-sha256" 2>/dev/null)" = "$sum" ]; then
  fresh=yes
fi
if [ "$fresh" = yes ]; then
  summary "ok: $OUTDIR/{vmlinuz,initrd.img,README} up to date"
  exit 0
fi

apt_install busybox-static cpio
apt_update_once
kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }')
[ -n "$kpkg" ] || die "cannot resolve linux-image-cloud-amd64 to a kernel package"
mkdir -p "$CACHE"
deb=$(find "$CACHE" -maxdepth 1 -name "${kpkg}_*.deb" | head -n 1)
if [ -z "$deb" ]; then
  say "apt-get download $kpkg"
  (cd "$CACHE" && apt-get download -q "$kpkg" >>"$LOG" 2>&1) || die "apt-get download $kpkg (log: $LOG)"
  deb=$(find "$CACHE" -maxdepth 1 -name "${kpkg}_*.deb" | head -n 1)
  [ -n "$deb" ] || die "apt-get download $kpkg gave no .deb"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dpkg -x "$deb" "$work/k"
kver=$(ls "$work/k/lib/modules")
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,dev,proc,sys,tmp,root,mnt/config,joboutputs,lib/modules}
cp /bin/busybox "$root/bin/busybox"
/bin/busybox --list-full | while read -r applet; do
  [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
done
mknod -m 600 "$root/dev/console" c 5 1   # the kernel opens it before /init runs
mknod -m 666 "$root/dev/null" c 1 3
for m in $MODULES; do
  ko=$(find "$work/k/lib/modules/$kver/kernel" -name "$m.ko" | head -n 1)
  [ -n "$ko" ] || die "module $m.ko not in $kpkg"
  cp "$ko" "$root/lib/modules/"
done
# shellcheck disable=SC2086  # unquoted: the list on one line
echo $MODULES >"$root/lib/modules/order"

# ---- /bin/vac-http: HTTP/1.0 client over busybox nc (busybox wget segfaults here) ----------
cat >"$root/bin/vac-http" <<'HTTP'
#!/bin/sh
# vac-http get URL        -> body on stdout; exit 0 only for a 2xx answer
# vac-http put URL FILE   -> PUT FILE with Content-Length; exit 0 only for a 2xx answer
# Plain http:// only, HTTP/1.0 (the server closes the connection, which ends nc).
method=$1 url=$2 file=$3
rest=${url#http://}
case $rest in */*) hostport=${rest%%/*} path=/${rest#*/} ;; *) hostport=$rest path=/ ;; esac
host=${hostport%:*} port=80
[ "$host" = "$hostport" ] || port=${hostport##*:}
resp=$(mktemp) || exit 2
{
  case $method in
    get) printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" ;;
    put) printf 'PUT %s HTTP/1.0\r\nHost: %s\r\nContent-Length: %s\r\n\r\n' \
           "$path" "$hostport" "$(wc -c <"$file")"; cat "$file" ;;
    *) echo "vac-http: get or put" >&2; exit 2 ;;
  esac
} | timeout 30 nc "$host" "$port" >"$resp" 2>/dev/null
read -r _ code _ <"$resp"
case $code in
  2??) hdr=$(awk '{ n += length($0) + 1 } /^\r?$/ { print n; exit }' "$resp")
       [ "$method" = get ] && tail -c +$((${hdr:-0} + 1)) "$resp"
       rm -f "$resp"; exit 0 ;;
  *) rm -f "$resp"; exit 1 ;;
esac
HTTP

# ---- udhcpc event script (busybox has no usable default path) ------------------------------
cat >"$root/etc/udhcpc.script" <<'DHCP'
#!/bin/sh
# shellcheck disable=SC2154  # udhcpc sets interface, ip, subnet, router, dns
case $1 in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ifconfig "$interface" "$ip" netmask "${subnet:-255.255.0.0}" up
    for r in $router; do route add default gw "$r" dev "$interface"; break; done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done ;;
esac
exit 0
DHCP

# ---- /init ----------------------------------------------------------------------------------
cat >"$root/init" <<'INIT'
#!/bin/sh
# Vac test guest /init (POSIX sh, busybox). THE CONTRACT the VM backend and its tests rely on:
#
# Boot: direct kernel boot of vmlinuz + initrd.img, kernel command line "console=ttyS0"
#   (add "quiet" to keep console.log short), serial console logged to a file,
#   <features><acpi/></features> in the domain XML (else `poweroff -f` does not end the domain).
#
# 1. user_data, first choice: a CONFIG DRIVE, an ISO 9660 filesystem with volume label
#    "config-2" on any block device: a virtio disk (/dev/vdX: fastest), a virtio-scsi or IDE
#    CD-ROM (/dev/srX; IDE needs the "pc" machine: there is no AHCI driver, so no SATA CD-ROM
#    on q35). File names need Rock Ridge extensions (plain ISO 9660 shows 8.3 names), e.g.
#    pycdlib new(interchange_level=4, rock_ridge="1.09", vol_ident="config-2"), rr_name=... .
#    It is mounted read-only at /mnt/config and must hold
#      openstack/latest/user_data          copied to /user_data (required)
#      openstack/latest/machinefeatures/   MJF directory (optional)
#      openstack/latest/jobfeatures/       MJF directory (optional)
#    The payload then runs with
#      MACHINEFEATURES=/mnt/config/openstack/latest/machinefeatures
#      JOBFEATURES=/mnt/config/openstack/latest/jobfeatures
#      JOBOUTPUTS=/joboutputs  JOBOUTPUTS_DIR=/joboutputs   (a local, writable directory)
#    The kernel command-line word "vac.datasource=network" skips the config drive (the
#    libvirt backend attaches one to every VM; its metadata-service tests use this).
# 2. Otherwise the NETWORK: eth0 (virtio-net) is configured by DHCP
#    (udhcpc -s /etc/udhcpc.script), then user_data is fetched with HTTP/1.0 GET
#    http://169.254.169.254/latest/user-data (10 tries, 1 s apart; 2xx only) to /user_data.
#    The payload then runs with
#      MACHINEFEATURES=http://169.254.169.253/machinefeatures
#      JOBFEATURES=http://169.254.169.253/jobfeatures
#      JOBOUTPUTS=http://169.254.169.253/joboutputs  JOBOUTPUTS_DIR=/joboutputs
#    `vac-http get URL` / `vac-http put URL FILE` are there for payloads (no working wget).
# 3. The payload: `sh /user_data` (a shell script; no MIME multipart, no cloud-init), cwd /,
#    stdin /dev/null, stdout and stderr on the serial console. Its exit code is printed as
#    "VAC-GUEST: payload exit N".
# 4. Joboutputs: if the payload left no $JOBOUTPUTS_DIR/shutdown_message, /init writes
#    "200 Intended work completed ok" (exit 0) or
#    "700 Error related to job agent or application within VM" (exit N != 0); with no
#    user_data at all: "500 Problem detected with environment/VM provided by the site".
#    Each regular file directly in /joboutputs whose name matches [A-Za-z0-9._-]+ is sent:
#    - config drive: on the serial console, one line per file,
#        VAC-JOBOUTPUT <name> <base64 of the content, one line, no wrapping>
#      (an empty file gives an empty third field); kernel messages are silenced first
#      (printk level 1) so that they do not cut into these lines;
#    - network: HTTP/1.0 PUT http://169.254.169.253/joboutputs/<name> with Content-Length;
#      a file whose PUT fails (no 2xx) is sent as a VAC-JOBOUTPUT console line instead.
#    Then the line "VAC-JOBOUTPUTS-END" (always, in both cases). Console lines may end in
#    "\r\n" (tty): parsers strip "\r".
# 5. `poweroff -f` (ACPI). Progress lines on the console start with "VAC-GUEST: ".
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "VAC-GUEST: init started"
read -r modules </lib/modules/order
for m in $modules; do
  insmod "/lib/modules/$m.ko" 2>/dev/null || echo "VAC-GUEST: insmod $m failed"
done
ip link set lo up

say() { echo "VAC-GUEST: $*"; }
iso_label() {  # the ISO 9660 volume identifier of block device $1, or nothing
  [ "$(dd if="$1" bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] || return 0
  dd if="$1" bs=1 skip=32808 count=32 2>/dev/null | sed 's/ *$//'
}
find_config_drive() {
  for dev in /dev/vd? /dev/sr? /dev/sd? /dev/hd?; do
    [ -b "$dev" ] || continue
    [ "$(iso_label "$dev")" = config-2 ] || continue
    if mount -t iso9660 -o ro "$dev" /mnt/config 2>/dev/null; then
      [ -f /mnt/config/openstack/latest/user_data ] && { echo "$dev"; return 0; }
      umount /mnt/config
    fi
  done
  return 1
}
finish() {
  sync
  say "poweroff"
  poweroff -f
  sleep 10
}

MODE=none
mkdir -p /joboutputs
case " $(cat /proc/cmdline) " in
  *" vac.datasource=network "*) dev= ;;
  *) dev=$(find_config_drive || { sleep 1; find_config_drive; } || true) ;;
esac
if [ -n "$dev" ]; then
  MODE=configdrive
  cp /mnt/config/openstack/latest/user_data /user_data
  say "config drive $dev"
  MF=/mnt/config/openstack/latest/machinefeatures
  JF=/mnt/config/openstack/latest/jobfeatures
  JO=/joboutputs
elif [ -e /sys/class/net/eth0 ]; then
  MODE=network
  if udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 10 -T 1 >/dev/null 2>&1; then
    say "network $(ip -4 -o addr show dev eth0 | awk '{ print $4 }')"
    i=0
    until vac-http get http://169.254.169.254/latest/user-data >/user_data; do
      i=$((i + 1))
      [ "$i" -lt 10 ] || { rm -f /user_data; say "no user-data from 169.254.169.254"; break; }
      sleep 1
    done
  else
    say "no DHCP lease on eth0"
  fi
  MF=http://169.254.169.253/machinefeatures
  JF=http://169.254.169.253/jobfeatures
  JO=http://169.254.169.253/joboutputs
else
  say "no config drive and no eth0"
fi

if [ -f /user_data ]; then
  say "payload start"
  (cd / && MACHINEFEATURES=$MF JOBFEATURES=$JF JOBOUTPUTS=$JO JOBOUTPUTS_DIR=/joboutputs \
    sh /user_data </dev/null)
  rc=$?
  say "payload exit $rc"
  if [ ! -f /joboutputs/shutdown_message ]; then
    if [ "$rc" = 0 ]; then
      echo "200 Intended work completed ok" >/joboutputs/shutdown_message
    else
      echo "700 Error related to job agent or application within VM" >/joboutputs/shutdown_message
    fi
  fi
else
  echo "500 Problem detected with environment/VM provided by the site" >/joboutputs/shutdown_message
fi

echo 1 >/proc/sys/kernel/printk
for f in /joboutputs/*; do
  name=${f#/joboutputs/}
  [ -f "$f" ] && [ ! -L "$f" ] || continue
  case $name in *[!A-Za-z0-9._-]*) continue ;; esac
  if [ "$MODE" = network ] && vac-http put "http://169.254.169.253/joboutputs/$name" "$f"; then
    continue
  fi
  echo "VAC-JOBOUTPUT $name $(base64 "$f" | tr -d '\n')"
done
echo "VAC-JOBOUTPUTS-END"
finish
INIT
chmod 755 "$root/init" "$root/bin/vac-http" "$root/etc/udhcpc.script"
{ sh -n "$root/init" && sh -n "$root/bin/vac-http"; } || die "syntax error in /init or vac-http"

mkdir -p "$OUTDIR"
(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9) >"$OUTDIR/initrd.img.new"
cp "$work/k/boot/vmlinuz-$kver" "$OUTDIR/vmlinuz.new"
{
  echo "Vac test guest, built by scripts/ci/build-test-guest.sh from $(basename "$deb")"
  echo "and busybox-static $(dpkg-query -W -f='${Version}' busybox-static). Modules loaded, in order:"
  echo "  $(tr -s ' ' <"$root/lib/modules/order")"
  echo
  sed -n '2,/^export PATH/p' "$root/init" | sed '$d' | sed 's/^# \{0,1\}//'
} >"$OUTDIR/README.new"
mv "$OUTDIR/vmlinuz.new" "$OUTDIR/vmlinuz"
mv "$OUTDIR/initrd.img.new" "$OUTDIR/initrd.img"
mv "$OUTDIR/README.new" "$OUTDIR/README"
chmod 644 "$OUTDIR"/{vmlinuz,initrd.img,README}
echo "$sum" >"$OUTDIR/.script-sha256"
summary "ok: built $OUTDIR/{vmlinuz,initrd.img,README} (kernel $kver)"
