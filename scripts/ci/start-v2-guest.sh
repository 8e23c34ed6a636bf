#!/usr/bin/env bash
# Start the cgroup v2 guest's tests (scripts/ci/run-v2-tests.sh) in the background, in a
# session of their own, and return at once. DIR receives:
#   pid     the process group of the run (kill -- -PID ends it and its QEMU)
#   output  run-v2-tests.sh's output
#   rc      its exit code, written (renamed into place) once it has ended
#   logdir  where the run leaves its console, pytest log and JUnit XML
#   part    PART, below
# PART says which of the guest's tests (run-v2-tests.sh's selection) the run takes:
#   all   every one (the default)
#   main  all but the VMs on LVM (test_lvm_libvirt.py), logs in /var/log/vac-v2
#   vms   only the VMs on LVM, in a guest of its own, logs in /var/log/vac-v2-vms: one VM
#         booted under TCG inside the guest's TCG, about 750 s of pytest alone and 1,200 s
#         from boot to power-off beside the main guest's run. Its thin-volume test prints
#         nothing for about 720 s of a quiet run, so the guest is taken as stalled only after
#         VMS_STALL seconds with nothing new on its console (run-v2-tests.sh's VAC_V2_STALL).
# scripts/run-tests runs the suite in two guests: `main` from the start (.ci/run starts it as
# soon as the guest and rpmbuild are set up, beside the rest of the setup) and `vms` once the
# host's own tests have ended, so that both cores work through the guests' tests instead of
# one core for the single-threaded TCG and the other idle. scripts/run-tests adopts a run
# started so (VAC_V2_BACKGROUND=DIR with a pid file) or starts one itself.
# Usage: scripts/ci/start-v2-guest.sh DIR [all|main|vms]      (root)
set -euo pipefail
dir=${1:?usage: start-v2-guest.sh DIR [all|main|vms]}
part=${2:-all}
VMS_TEST=tests/integration/test_lvm_libvirt.py
VMS_STALL=3600
repo=$(cd "$(dirname "$0")/../.." && pwd)
[ -d "$dir" ] || { echo "start-v2-guest.sh: no directory $dir" >&2; exit 2; }
[ ! -e "$dir/pid" ] || { echo "start-v2-guest.sh: $dir already holds a run" >&2; exit 2; }
args=()
logdir=${VAC_V2_LOGDIR:-/var/log/vac-v2}
case $part in
  all) ;;
  main) args=("--deselect=$VMS_TEST") ;;
  vms) args=("$VMS_TEST")
       logdir=${VAC_V2_VMS_LOGDIR:-/var/log/vac-v2-vms}
       export VAC_V2_STALL=$VMS_STALL ;;
  *) echo "start-v2-guest.sh: no part $part (all, main or vms)" >&2; exit 2 ;;
esac
export VAC_V2_LOGDIR=$logdir
echo "$logdir" >"$dir/logdir"
echo "$part" >"$dir/part"
cd "$repo"
setsid bash -c 'out=$1; shift; bash scripts/ci/run-v2-tests.sh "$@" >"$out/output" 2>&1
                echo $? >"$out/rc.new"; mv "$out/rc.new" "$out/rc"' _ "$dir" "${args[@]}" \
    </dev/null >/dev/null 2>&1 &
echo "$!" >"$dir/pid"
echo "[start-v2-guest] the cgroup v2 guest's tests ($part) started in the background (pid $!, output in $dir)"
