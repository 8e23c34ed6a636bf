# shellcheck shell=bash
# Helpers sourced by the scripts/ci/setup-*.sh scripts. The sourcing script sets STEP (its
# name in messages), T0=$EPOCHREALTIME, LOG (where apt and pip output goes) and STATE
# (/var/lib/vac-test: stamps, caches, test images).
say() { printf '[setup-%s] %s\n' "$STEP" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
summary() { awk -v s="$STEP" -v m="$1" -v a="$T0" -v b="$EPOCHREALTIME" \
  'BEGIN { printf "[setup-%s] %s (%.1f s)\n", s, m, b - a }'; }
apt_update_once() {  # apt-get update at most once an hour
  if [ -z "$(find "$STATE/apt-updated" -mmin -60 2>/dev/null)" ]; then
    say "apt-get update"
    apt-get -o DPkg::Lock::Timeout=600 update -q >>"$LOG" 2>&1 || { tail -n 20 "$LOG" >&2; die "apt-get update (log: $LOG)"; }
    mkdir -p "$STATE" && touch "$STATE/apt-updated"
  fi
}
# Both wait up to 10 minutes for dpkg's lock (unattended-upgrades on a fresh machine, another
# job's apt-get) instead of failing at once.
apt_install() {  # install the Debian packages among "$@" that are missing
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -qx 'install ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  apt_update_once
  say "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q \
    --no-install-recommends "${missing[@]}" \
    >>"$LOG" 2>&1 || { tail -n 30 "$LOG" >&2; die "apt-get install ${missing[*]} (log: $LOG)"; }
}
detached() {  # "$@" in a session of its own, stdin /dev/null, no inherited fd above 2
  (
    for fd in /proc/self/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] && { eval "exec $fd>&-" 2>/dev/null || true; }
    done
    cd /   # a daemon must not keep the caller's directory (a clone that may be deleted)
    exec setsid "$@" </dev/null
  )
}
