# shellcheck shell=bash
# Helpers of the Debian guest builders (build-v2-guest.sh, build-cloudinit-guest.sh), sourced
# after lib.sh. The builder sets CACHE (debootstrap's and apt's .deb caches), work (a
# directory removed at exit) and root (the chroot, inside work), and calls `trap guest_cleanup
# EXIT` once root is set.

debian_mirror() {  # the Debian archive the host's apt uses
  local mirror
  # shellcheck disable=SC2016  # apt's own $(...) field names
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' \
    | awk '$2 == "bookworm" && $3 == "Packages" { print $1; exit }')
  [ -n "$mirror" ] || die "no bookworm source in the apt configuration to take the archive from"
  echo "$mirror"
}
guest_cleanup() {  # never rm -rf through a mount left behind (the host's /dev is bound in)
  local m
  for m in var/cache/apt/archives dev/pts dev proc sys; do umount "$root/$m" 2>/dev/null || true; done
  if grep -q " $root/" /proc/mounts; then
    say "mounts are left under $root: not removing $work"
    return
  fi
  rm -rf --one-file-system "$work"
}
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
guest_debootstrap() {  # guest_debootstrap SUITE MIRROR BASE: minbase + BASE into root, mounted
  local suite=$1 mirror=$2 base=$3
  mkdir -p "$CACHE/debootstrap" "$CACHE/archives/partial"
  say "debootstrap $suite (minbase + $base; log: $LOG)"
  # shellcheck disable=SC2086  # the list is meant to split
  if ! debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap" \
    --include="$(echo $base | tr ' ' ',')" "$suite" "$root" "$mirror" >>"$LOG" 2>&1; then
    cat "$root/debootstrap/debootstrap.log" >>"$LOG" 2>/dev/null || true
    tail -n 30 "$LOG" >&2
    die "debootstrap $suite (log: $LOG)"
  fi
  mount -t proc proc "$root/proc"
  mount -t sysfs sysfs "$root/sys"
  mount --bind /dev "$root/dev"
  mount --bind /dev/pts "$root/dev/pts"
  printf 'deb %s %s main\n' "$mirror" "$suite" >"$root/etc/apt/sources.list"
  mkdir -p "$root/var/cache/apt/archives"
}
guest_apt_install() {  # guest_apt_install PACKAGE...: apt-get install in root, .debs cached
  mount --bind "$CACHE/archives" "$root/var/cache/apt/archives"
  in_root apt-get update -q >>"$LOG" 2>&1 \
    || { umount "$root/var/cache/apt/archives"; die "apt-get update in the guest"; }
  if ! in_root apt-get install -y -q --no-install-recommends "$@" >>"$LOG" 2>&1; then
    umount "$root/var/cache/apt/archives"
    tail -n 30 "$LOG" >&2
    die "apt-get install in the guest (log: $LOG)"
  fi
  umount "$root/var/cache/apt/archives"
}
guest_kernel() {  # the version of the guest's (newest) kernel, which must have an initrd
  local kver
  kver=$(ls "$root/lib/modules" | sort -V | tail -n 1)
  [ -f "$root/boot/initrd.img-$kver" ] || die "no initrd for kernel $kver in the guest"
  echo "$kver"
}
guest_image() {  # guest_image KVER OUTDIR SIZE LABEL: vmlinuz.new, initrd.img.new, rootfs.img.new
  local kver=$1 outdir=$2 size=$3 label=$4 m
  for m in dev/pts dev proc sys; do umount "$root/$m"; done
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*_Packages
  mkdir -p "$outdir"
  cp "$root/boot/vmlinuz-$kver" "$outdir/vmlinuz.new"
  cp "$root/boot/initrd.img-$kver" "$outdir/initrd.img.new"
  say "mkfs.ext4 -d (image $size, sparse)"
  rm -f "$outdir/rootfs.img.new"
  mkfs.ext4 -q -F -L "$label" -d "$root" "$outdir/rootfs.img.new" "$size" >>"$LOG" 2>&1 \
    || die "mkfs.ext4 -d (log: $LOG)"
}
