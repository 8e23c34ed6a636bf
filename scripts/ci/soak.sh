#!/usr/bin/env bash
# The soak: `CI=true bash .ci/run` on a fresh clean clone of main, N times in a
# row (default 3), while a CPU hog keeps one core busy (stress-ng --cpu 1 if installed, else
# `yes >/dev/null`), as a shared CI machine is. Prints each run's result and duration (the
# README's timing line comes from here) and exits 1 if any run failed or the hog died.
#
# Usage: scripts/ci/soak.sh [-n RUNS] [--keep] [--dry-run]      (root, as .ci/run)
#   -n RUNS     how many runs (default 3)
#   --keep      keep each run's clone (default: removed after its run; its log is kept)
#   --dry-run   everything but the suite: clone, hog, timing, summary, with a syntax check
#               of .ci/run and scripts/run-tests instead of running them (seconds, not hours)
# Environment: SOAK_SOURCE (the repository cloned, default the one this script is in),
# SOAK_BRANCH (default main), SOAK_LOGDIR (default /var/log/vac-soak: run-N.log per run).
# A run takes about an hour on a quiet 2-core machine, and longer beside the hog; the machine
# should run nothing else meanwhile.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SOURCE=${SOAK_SOURCE:-$REPO}
BRANCH=${SOAK_BRANCH:-main}
LOGDIR=${SOAK_LOGDIR:-/var/log/vac-soak}
runs=3 keep=no dry=no
say() { printf '[soak] %s\n' "$*"; }
usage() { sed -n '/^# Usage:/,/^# A run takes/s/^# \{0,1\}//p' "$0" >&2; exit 2; }

while [ "$#" -gt 0 ]; do
  case $1 in
    -n) [ "$#" -ge 2 ] && [[ $2 =~ ^[1-9][0-9]*$ ]] || usage; runs=$2; shift 2 ;;
    --keep) keep=yes; shift ;;
    --dry-run) dry=yes; shift ;;
    -h|--help) usage ;;
    *) echo "soak.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "soak.sh: run as root (.ci/run starts engines)" >&2; exit 2; }
mkdir -p "$LOGDIR" || exit 2
work=$(mktemp -d /var/tmp/vac-soak.XXXXXX) || exit 2

# The hog: one busy process in a session of its own, ended by its pid when this script ends.
if command -v stress-ng >/dev/null; then
  hog_what="stress-ng --cpu 1"
  setsid stress-ng --cpu 1 --quiet </dev/null >/dev/null 2>&1 &
else
  hog_what="yes >/dev/null"
  setsid yes </dev/null >/dev/null 2>&1 &
fi
hog=$!
cleanup() {
  kill -- -"$hog" 2>/dev/null || kill "$hog" 2>/dev/null
  [ "$keep" = yes ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

commit=$(git -C "$SOURCE" rev-parse --short "$BRANCH" 2>/dev/null) \
  || { echo "soak.sh: $SOURCE has no branch $BRANCH" >&2; exit 2; }
say "$runs run(s) of CI=true bash .ci/run on clean clones of $SOURCE $BRANCH ($commit)," \
    "with '$hog_what' (pid $hog) on one of $(nproc) cores; logs in $LOGDIR"
[ "$dry" = yes ] && say "dry run: a syntax check of .ci/run and scripts/run-tests instead of the suite"

results=() failed=0
for i in $(seq 1 "$runs"); do
  clone=$work/run-$i
  log=$LOGDIR/run-$i.log
  if ! git clone -q --branch "$BRANCH" "$SOURCE" "$clone" 2>"$log"; then
    results+=("run $i: FAILED (git clone: $(tail -n 1 "$log"))"); failed=1; continue
  fi
  say "run $i of $runs: $(git -C "$clone" log -1 --format='%h %s' | cut -c1-80)"
  began=$SECONDS
  if [ "$dry" = yes ]; then
    (cd "$clone" && bash -n .ci/run && bash -n scripts/run-tests && sleep 1) >"$log" 2>&1
  else
    (cd "$clone" && CI=true bash .ci/run) </dev/null >"$log" 2>&1
  fi
  rc=$?
  took=$((SECONDS - began))
  kill -0 "$hog" 2>/dev/null || { say "the CPU hog died during run $i"; failed=1; }
  verdict=passed; [ "$rc" -eq 0 ] || { verdict="FAILED (exit $rc)"; failed=1; }
  results+=("$(printf 'run %d: %s in %d min %02d s (%d s); log %s' \
               "$i" "$verdict" $((took / 60)) $((took % 60)) "$took" "$log")")
  say "${results[-1]}"
  [ "$rc" -eq 0 ] || grep -a -E 'FAILED|run-tests: ' "$log" | tail -n 15
  [ "$keep" = yes ] || rm -rf "$clone"
done

say "summary ($commit, '$hog_what' on one core):"
printf '  %s\n' "${results[@]}"
[ "$failed" -eq 0 ] && say "all $runs run(s) passed" || say "FAILED"
exit "$failed"
