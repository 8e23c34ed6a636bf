#!/usr/bin/env bash
# Start the cgroup v2 guest's tests (scripts/ci/run-v2-tests.sh) in the background, in a
# session of their own, and return at once. DIR receives:
#   pid     the process group of the run (kill -- -PID ends it and its QEMU)
#   output  run-v2-tests.sh's output
#   rc      its exit code, written (renamed into place) once it has ended
# .ci/run starts the guest this way as soon as the guest and rpmbuild are set up, so that the
# guest's single-threaded TCG runs beside the rest of the setup; scripts/run-tests adopts a run
# started so (VAC_V2_BACKGROUND=DIR with a pid file) or starts one itself.
# Usage: scripts/ci/start-v2-guest.sh DIR      (root)
set -euo pipefail
dir=${1:?usage: start-v2-guest.sh DIR}
repo=$(cd "$(dirname "$0")/../.." && pwd)
[ -d "$dir" ] || { echo "start-v2-guest.sh: no directory $dir" >&2; exit 2; }
[ ! -e "$dir/pid" ] || { echo "start-v2-guest.sh: $dir already holds a run" >&2; exit 2; }
cd "$repo"
setsid bash -c 'bash scripts/ci/run-v2-tests.sh >"$1/output" 2>&1; echo $? >"$1/rc.new"
                mv "$1/rc.new" "$1/rc"' _ "$dir" </dev/null >/dev/null 2>&1 &
echo "$!" >"$dir/pid"
echo "[start-v2-guest] the cgroup v2 guest's tests started in the background (pid $!, output in $dir)"
