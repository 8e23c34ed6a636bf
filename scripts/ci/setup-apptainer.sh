#!/usr/bin/env bash
# Install a real Apptainer 1.4 (not in bookworm) and what the Apptainer tests need, idempotently:
#   1. a second apt source list, used only through -o options (Dir::Etc::SourceList,
#      Dir::State::Lists, Dir::Cache under $APTDIR), naming the Debian archive the machine
#      already uses (read from apt, not written here) with the suites sid and trixie;
#      apt-get download apptainer (sid) and libc6 libseccomp2 libsqlite3-0 (trixie);
#   2. dpkg -x; trixie's loader and libraries go to a private dir, $GLIBC (apptainer is built
#      against glibc 2.38, bookworm has 2.36);
#   3. apptainer's files at their Debian paths (/usr/bin/apptainer: it finds its config
#      relative to its prefix), patchelf --set-interpreter + --force-rpath --set-rpath $GLIBC
#      on /usr/bin/apptainer and its starter; /usr/bin/singularity -> apptainer (spython);
#      "systemd cgroups = no" in apptainer.conf (no systemd here);
#   4. the system user $USER_NAME (runs containers through user namespaces: as root,
#      `apptainer exec` fails here for lack of CAP_SYS_RESOURCE), with subuid/subgid ranges;
#   5. the sandbox image $SANDBOX (busybox-static + applet symlinks) and, built from it by
#      that user, the SIF $SIF (run unprivileged by extracting it to a temporary sandbox:
#      bookworm's squashfuse cannot load apptainer's offsetpreload.so, built for glibc 2.38);
#   6. checks that `runuser -u $USER_NAME -- apptainer exec --contain $SANDBOX /bin/sh -c 'echo ok'`
#      prints ok.
# Usage: scripts/ci/setup-apptainer.sh     (root)
set -euo pipefail

STEP=apptainer
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
APTDIR=$STATE/apt-sid
GLIBC=/opt/apptainer-glibc
LIBEXEC=/usr/lib/x86_64-linux-gnu/apptainer
USER_NAME=vacsngly
SANDBOX=$STATE/busybox-sandbox
SIF=$STATE/busybox.sif
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
as_user() { (cd / && runuser -u "$USER_NAME" -- "$@"); }
installed_ok() {
  [ -x /usr/bin/apptainer ] && [ "$(patchelf --print-interpreter /usr/bin/apptainer 2>/dev/null)" = "$GLIBC/ld-linux-x86-64.so.2" ] \
    && /usr/bin/apptainer --version 2>/dev/null | grep -q '^apptainer version 1\.4'
}

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"
apt_install patchelf squashfs-tools uidmap busybox-static ca-certificates

# ---- 1-3: apptainer from sid with a private glibc from trixie ------------------------------
if ! installed_ok; then
  # shellcheck disable=SC2016  # apt's own $(...) field names
  mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(IDENTIFIER)' \
    | awk '$2 == "bookworm" && $3 == "Packages" { print $1; exit }')
  [ -n "$mirror" ] || die "no bookworm source in the apt configuration to take the archive from"
  mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/debs"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" sid "$keyring" "$mirror" trixie \
    >"$APTDIR/sources.list"
  apt2=(-o "Dir::Etc::SourceList=$APTDIR/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$APTDIR/lists" -o "Dir::Cache=$APTDIR/cache")
  say "apt-get update (sid, trixie; lists in $APTDIR)"
  apt-get "${apt2[@]}" update -q >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "apt-get update of sid/trixie"; }
  rm -f "$APTDIR"/debs/*.deb
  chown _apt "$APTDIR/debs" 2>/dev/null || true
  say "apt-get download apptainer/sid libc6/trixie libseccomp2/trixie libsqlite3-0/trixie"
  (cd "$APTDIR/debs" && apt-get "${apt2[@]}" download -q apptainer/sid libc6/trixie \
    libseccomp2/trixie libsqlite3-0/trixie >>"$LOG" 2>&1) || die "apt-get download (log: $LOG)"

  x=$(mktemp -d)
  trap 'rm -rf "$x"' EXIT
  for deb in "$APTDIR"/debs/*.deb; do dpkg -x "$deb" "$x"; done
  lib=$x/usr/lib/x86_64-linux-gnu
  [ -f "$lib/ld-linux-x86-64.so.2" ] || lib=$x/lib/x86_64-linux-gnu
  mkdir -p "$GLIBC"
  # cp -L: the real files, not the symlinks (the loader in particular)
  for f in ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 libresolv.so.2 \
    libseccomp.so.2 libsqlite3.so.0; do
    cp -L "$lib/$f" "$GLIBC/$f" 2>/dev/null || cp -L "$x/usr/lib/x86_64-linux-gnu/$f" "$GLIBC/$f" \
      || die "$f not found in the trixie packages"
  done
  chmod 755 "$GLIBC" "$GLIBC/ld-linux-x86-64.so.2"

  install -D -m 755 "$x/usr/bin/apptainer" /usr/bin/apptainer
  mkdir -p "$LIBEXEC" /var/lib/apptainer/mnt/session /var/lib/apptainer/mnt/source
  cp -a "$x$LIBEXEC/." "$LIBEXEC/"
  if [ ! -f /etc/apptainer/apptainer.conf ]; then
    mkdir -p /etc/apptainer
    cp -a "$x/etc/apptainer/." /etc/apptainer/
  fi
  sed -i 's/^systemd cgroups = yes/systemd cgroups = no/' /etc/apptainer/apptainer.conf
  for bin in /usr/bin/apptainer "$LIBEXEC/bin/starter"; do
    patchelf --set-interpreter "$GLIBC/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$GLIBC" "$bin"
  done
  ln -sfn apptainer /usr/bin/singularity
  installed_ok || die "/usr/bin/apptainer does not run after installation"
fi

# ---- 4: the unprivileged user -----------------------------------------------------------
if ! id "$USER_NAME" >/dev/null 2>&1; then
  say "creating system user $USER_NAME"
  useradd --system --create-home --home-dir "/var/lib/$USER_NAME" --shell /usr/sbin/nologin \
    --comment "Vac Apptainer containers" "$USER_NAME"
fi
uid=$(id -u "$USER_NAME")
for f in /etc/subuid /etc/subgid; do   # for --fakeroot builds; a range far above real ids
  grep -q "^$USER_NAME:" "$f" 2>/dev/null || echo "$USER_NAME:$((1000000 + uid * 65536)):65536" >>"$f"
done

# ---- 5: the test images -----------------------------------------------------------------
if [ ! -x "$SANDBOX/bin/busybox" ]; then
  say "building sandbox $SANDBOX"
  tmp=$SANDBOX.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/tmp}
  chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
  cp /bin/busybox "$tmp/bin/busybox"
  /bin/busybox --list-full | while read -r applet; do
    [ -e "$tmp/$applet" ] || ln -s /bin/busybox "$tmp/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/etc/group"
  touch "$tmp/etc/hosts" "$tmp/etc/localtime" "$tmp/etc/resolv.conf"
  chmod -R a+rX "$tmp"
  rm -rf "$SANDBOX"
  mv "$tmp" "$SANDBOX"
fi
chmod 755 "$STATE"

if [ ! -s "$SIF" ]; then
  say "building $SIF from the sandbox, as $USER_NAME"
  b=$(mktemp -d)
  chown "$USER_NAME" "$b"
  if as_user apptainer -s build "$b/busybox.sif" "$SANDBOX" >>"$LOG" 2>&1 && [ -s "$b/busybox.sif" ]; then
    install -m 644 "$b/busybox.sif" "$SIF"
  else
    say "warning: apptainer build of the SIF failed as $USER_NAME (log: $LOG); sandbox only"
  fi
  rm -rf "$b"
fi

# ---- 6: verification --------------------------------------------------------------------
out=$(timeout 60 runuser -u "$USER_NAME" -- sh -c "cd / && apptainer exec --contain '$SANDBOX' /bin/sh -c 'echo ok'" 2>>"$LOG") \
  || die "apptainer exec as $USER_NAME failed (log: $LOG)"
[ "$out" = ok ] || die "apptainer exec printed '$out', not ok"
sif_note="no SIF"
if [ -s "$SIF" ]; then
  sif_out=$(timeout 60 runuser -u "$USER_NAME" -- sh -c "cd / && apptainer exec --contain '$SIF' /bin/sh -c 'echo ok'" 2>>"$LOG" || true)
  [ "$sif_out" = ok ] && sif_note="SIF $SIF runs" || sif_note="SIF $SIF does not run (log: $LOG)"
fi
summary "ok: $(apptainer --version), user $USER_NAME runs sandbox $SANDBOX; $sif_note"
