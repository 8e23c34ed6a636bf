#!/usr/bin/env bash
# Bring up a real Docker engine and the local test image, idempotently:
#   - apt-get install docker.io (and busybox-static) if missing;
#   - if `docker info` fails, start `dockerd` in the background, detached from this shell
#     (own session, stdio on /var/log/dockerd.log, no other inherited file descriptor: a
#     pipe held open by a daemon can keep a CI runner waiting forever), and wait until it answers (60 s at most);
#   - build the image vac-test/busybox:1 (no registry here: a root fs with the static busybox
#     and one symlink per applet, then `docker import`), only if it is not there yet.
# Usage: scripts/ci/setup-docker.sh      (root)
set -euo pipefail

STEP=docker
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
IMAGE=vac-test/busybox:1
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
engine_up() { timeout 10 docker info >/dev/null 2>&1; }

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"

command -v dockerd >/dev/null || apt_install docker.io
apt_install busybox-static

if ! engine_up; then
  say "starting dockerd (log: /var/log/dockerd.log)"
  detached dockerd >>/var/log/dockerd.log 2>&1 &
  deadline=$((SECONDS + 60))
  until engine_up; do
    kill -0 $! 2>/dev/null || { tail -n 20 /var/log/dockerd.log >&2; die "dockerd exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 /var/log/dockerd.log >&2; die "dockerd not answering after 60 s"; }
    sleep 0.5
  done
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "building $IMAGE from busybox-static"
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,proc,sys,dev,root,var/tmp}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  cp /bin/busybox "$root/bin/busybox"
  # One symlink per applet at its usual place (bin/sh, usr/bin/env, sbin/ip, ...).
  /bin/busybox --list-full | while read -r applet; do
    [ -e "$root/$applet" ] || ln -s /bin/busybox "$root/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null \
    || die "docker import $IMAGE"
fi

out=$(timeout 60 docker run --rm "$IMAGE" /bin/sh -c 'echo ok') || die "docker run $IMAGE failed"
[ "$out" = ok ] || die "docker run $IMAGE printed '$out', not ok"
summary "ok: dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null), image $IMAGE runs"
