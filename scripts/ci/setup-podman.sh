#!/usr/bin/env bash
# Bring up a real Podman (Debian's packages) with its rootful API socket, idempotently:
#   - apt-get install podman, crun, netavark + aardvark-dns (networks), uidmap, slirp4netns and
#     fuse-overlayfs (rootless), catatonit, if missing;
#   - /etc/containers/containers.conf.d/50-vac-ci.conf: cgroupfs manager and file event log
#     (systemd is not PID 1 on the CI hosts: no systemd cgroup manager, no journald events),
#     runc (crun 1.8 refuses this host's hybrid cgroup v1/v2 mounts), and default ulimits
#     within this host's hard limits (rootful Podman asks for nofile/nproc 1048576, which a
#     CI sandbox without CAP_SYS_RESOURCE cannot grant; Docker leaves the engine's own);
#   - the test image vac-test/busybox:1 copied from the Docker engine (setup-docker.sh builds it;
#     no registry here), only if Podman lacks it;
#   - if the API socket does not answer, `podman system service --time=0` on
#     unix:///run/podman/podman.sock in the background, detached from this shell (own session,
#     stdio on /var/log/podman-service.log, no inherited fd), and wait until it answers (60 s);
#   - a check that `podman run` prints ok and that the socket answers /_ping and /version;
#   - rootless: the user vacpodman (system user, home /var/lib/vacpodman) with a subordinate
#     uid and gid range of 65536 ids above every range in /etc/subuid and /etc/subgid, its
#     storage on overlay, the test image loaded into it, /dev/net/tun usable by it (0666 as
#     Debian's udev makes it: slirp4netns opens it as the user), and its own API service on
#     unix:///run/user/<uid>/podman/podman.sock started as that user with XDG_RUNTIME_DIR set,
#     detached, in / (no systemd as PID 1 here: no linger, no user podman.socket, and nothing
#     that holds the socket across a crash of the service); checked like the rootful one, and
#     that a container's root is the user's first subordinate uid. Should the service die, the
#     rootless tests' fixture starts it again the same way (tests/integration/podman_engine.py:
#     revive_rootless); the v2 guest runs it socket-activated in the user's systemd instead.
# Usage: scripts/ci/setup-podman.sh      (root; after setup-docker.sh)
set -euo pipefail

STEP=podman
T0=$EPOCHREALTIME
LOG=/var/log/vac-setup.log
STATE=/var/lib/vac-test
IMAGE=vac-test/busybox:1
SOCKET=/run/podman/podman.sock
SERVICE_LOG=/var/log/podman-service.log
PIDFILE=$STATE/podman-service.pid
CONF=/etc/containers/containers.conf.d/50-vac-ci.conf
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
api_up() { timeout 10 curl -fsS --unix-socket "$SOCKET" http://d/_ping 2>/dev/null | grep -qx OK; }
# A container run through the API service itself: a service that answers /_ping can still fail
# every start (e.g. its working directory was deleted: conmon "Failed to get working directory").
api_runs() {
  [ "$(timeout 120 podman --url "unix://$SOCKET" run --rm "$IMAGE" /bin/sh -c 'echo ok' 2>&1)" = ok ]
}

[ "$(id -u)" = 0 ] || die "run as root"
mkdir -p "$STATE"

apt_install podman crun netavark aardvark-dns uidmap slirp4netns fuse-overlayfs catatonit curl

nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu)
{ [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
want=$(printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n' \
  "$nofile" "$nofile" "$nproc" "$nproc")
if [ "$(cat "$CONF" 2>/dev/null)" != "$want" ]; then
  say "writing $CONF (cgroupfs manager, file events, runc, ulimits nofile=$nofile nproc=$nproc)"
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$want" >"$CONF.tmp"
  mv "$CONF.tmp" "$CONF"
  pid=$(cat "$PIDFILE" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = podman ]; then
    say "restarting the API service (pid $pid) for the new configuration"
    kill "$pid"
    sleep 1
  fi
fi

if ! podman image exists "$IMAGE" 2>/dev/null; then
  command -v docker >/dev/null && docker image inspect "$IMAGE" >/dev/null 2>&1 \
    || die "$IMAGE is not in Docker either: run setup-docker.sh first"
  say "copying $IMAGE from Docker"
  docker save "$IMAGE" | podman load -q >>"$LOG" 2>&1 || die "podman load $IMAGE (log: $LOG)"
  podman image exists "$IMAGE" || podman tag "localhost/$IMAGE" "$IMAGE" \
    || die "$IMAGE not found in podman after the load"
fi

if api_up && ! api_runs; then
  say "the podman service on $SOCKET answers but cannot run a container: restarting it"
  pkill -f "^podman system service --time=0 unix://$SOCKET\$" || true
  deadline=$((SECONDS + 30))
  while api_up && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
fi
if ! api_up; then
  say "starting podman system service on $SOCKET (log: $SERVICE_LOG)"
  mkdir -p "$(dirname "$SOCKET")"
  rm -f "$SOCKET"
  detached podman system service --time=0 "unix://$SOCKET" >>"$SERVICE_LOG" 2>&1 &
  deadline=$((SECONDS + 60))
  until api_up; do
    kill -0 $! 2>/dev/null || { tail -n 20 "$SERVICE_LOG" >&2; die "podman system service exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$SERVICE_LOG" >&2; die "the Podman API not answering after 60 s"; }
    sleep 0.5
  done
  pgrep -f "^podman system service --time=0 unix://$SOCKET\$" | head -1 >"$PIDFILE"
fi

api_runs || die "podman --url unix://$SOCKET run $IMAGE did not print ok (log: $SERVICE_LOG)"
version=$(timeout 10 curl -fsS --unix-socket "$SOCKET" http://d/version) || die "GET /version on $SOCKET"
summary "ok: podman $(podman version -f '{{.Server.Version}}' 2>/dev/null || podman --version), API on $SOCKET ($(printf '%s' "$version" | python3 -c 'import json,sys; print("API", json.load(sys.stdin).get("ApiVersion", "?"))')), image $IMAGE runs"

# Rootless ----------------------------------------------------------------------------------
RL_USER=vacpodman
RL_HOME=/var/lib/$RL_USER
id -u "$RL_USER" >/dev/null 2>&1 || {
  say "creating the rootless Podman user $RL_USER"
  useradd -r -m -d "$RL_HOME" -s /usr/sbin/nologin "$RL_USER"
}
RL_UID=$(id -u "$RL_USER")
for f in /etc/subuid /etc/subgid; do
  if ! grep -q "^$RL_USER:" "$f"; then
    end=$(awk -F: '{ e = $2 + $3; if (e > m) m = e } END { print m + 0 }' /etc/subuid /etc/subgid)
    [ "$end" -ge 100000 ] || end=100000
    say "giving $RL_USER the subordinate ids $end-$((end + 65535)) in /etc/subuid and /etc/subgid"
    usermod --add-subuids "$end-$((end + 65535))" --add-subgids "$end-$((end + 65535))" "$RL_USER"
    break
  fi
done
RL_SUB=$(awk -F: -v u="$RL_USER" '$1 == u { print $2; exit }' /etc/subuid)
RL_RUN=/run/user/$RL_UID
RL_SOCKET=$RL_RUN/podman/podman.sock
RL_LOG=/var/log/podman-service-$RL_USER.log
RL_PIDFILE=$STATE/podman-service-$RL_USER.pid
install -d -o "$RL_USER" -g "$(id -g "$RL_USER")" -m 700 "$RL_RUN" "$RL_RUN/podman"
as_user() { (cd / && runuser -u "$RL_USER" -- env HOME="$RL_HOME" XDG_RUNTIME_DIR="$RL_RUN" "$@"); }
storage=$RL_HOME/.config/containers/storage.conf
if [ ! -f "$storage" ]; then
  as_user mkdir -p "$(dirname "$storage")"
  printf '[storage]\ndriver = "overlay"\n' | as_user tee "$storage" >/dev/null
fi
if [ "$(stat -c %a /dev/net/tun 2>/dev/null)" != 666 ] && [ -c /dev/net/tun ]; then
  say "chmod 0666 /dev/net/tun (as Debian's udev has it; slirp4netns opens it as $RL_USER)"
  chmod 0666 /dev/net/tun
fi
if ! as_user podman image exists "$IMAGE" 2>/dev/null; then
  say "copying $IMAGE into $RL_USER's Podman"
  podman save "$IMAGE" | as_user podman load -q >>"$LOG" 2>&1 || die "rootless podman load $IMAGE (log: $LOG)"
  as_user podman image exists "$IMAGE" || as_user podman tag "localhost/$IMAGE" "$IMAGE" \
    || die "$IMAGE not found in $RL_USER's podman after the load"
fi
rl_up() { timeout 10 curl -fsS --unix-socket "$RL_SOCKET" http://d/_ping 2>/dev/null | grep -qx OK; }
rl_uid() {  # the host uid of a container's root in the user's Podman, through its API service
  timeout 120 podman --url "unix://$RL_SOCKET" run --rm --userns=nomap "$IMAGE" \
    /bin/sh -c 'cat /proc/self/uid_map' 2>&1 | awk '$1 == 0 { print $2 }'
}
if ! rl_up; then
  say "starting $RL_USER's podman system service on $RL_SOCKET (log: $RL_LOG)"
  rm -f "$RL_SOCKET"
  touch "$RL_LOG" && chown "$RL_USER" "$RL_LOG"
  detached runuser -u "$RL_USER" -- env HOME="$RL_HOME" XDG_RUNTIME_DIR="$RL_RUN" \
    podman system service --time=0 "unix://$RL_SOCKET" >>"$RL_LOG" 2>&1 &
  deadline=$((SECONDS + 60))
  until rl_up; do
    kill -0 $! 2>/dev/null || { tail -n 20 "$RL_LOG" >&2; die "$RL_USER's podman system service exited"; }
    [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$RL_LOG" >&2; die "$RL_USER's Podman API not answering after 60 s"; }
    sleep 0.5
  done
  pgrep -u "$RL_USER" -f "^podman system service --time=0 unix://$RL_SOCKET\$" | head -1 >"$RL_PIDFILE"
fi
# The uid map inside the container is relative to the user's namespace: 0 -> 1 there is the
# first subordinate id on the host.
[ "$(rl_uid)" = 1 ] || die "a rootless container's root is not $RL_USER's first subordinate uid $RL_SUB (log: $RL_LOG)"
summary "ok: rootless podman of $RL_USER (uid $RL_UID, subordinate ids from $RL_SUB) on unix://$RL_SOCKET"
