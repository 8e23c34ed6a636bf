#!/usr/bin/env bash
# Run the container backends' tests on cgroup v2 with systemd, as on EL9, and the VMs on LVM:
# boot the guest of scripts/ci/build-v2-guest.sh under QEMU (TCG: no KVM here; direct kernel
# boot, not through the host's libvirt, no network, so the host's libvirt tests' NAT network
# is not touched; the test VM guest is brought along for the guest's own libvirtd) on a
# qcow2 overlay of its root
# image, with the tree under test (this clone's `git ls-files` plus untracked files that are
# not ignored) on a second disk made with `mkfs.ext4 -d`. In the guest, vac-v2-run.service runs
# scripts/ci/v2-guest-run.sh from that disk and powers off; here the console is read for its
# "VAC-V2: " lines and pytest's log and JUnit XML are copied out of the disk image with
# debugfs (no loop mount). Extra arguments go to pytest in the guest (e.g. -k, -x).
# Exit: 0 the guest's tests passed; 1 they failed, or the guest was stopped (below); 2 the
# guest cannot be run here (not root, not built, no qemu-system-x86_64): the caller decides
# whether that is a skip.
# No budget on the whole run: how long it takes depends on what else the machine runs (about
# 3,530 s of a quiet run, 4,100 s beside a CPU hog). The guest is stopped when it stalls:
# nothing new on its console for VAC_V2_STALL seconds (default 2400; pytest -v prints each
# test's name as it starts and its result as it ends, and the longest test,
# test_vacd_systemd.py, takes 340 s of a quiet run). VAC_V2_TIMEOUT (default 14400) only caps
# a run that goes on making progress, so that no QEMU is left running for good.
# Everything of the last run stays in VAC_V2_LOGDIR (default /var/log/vac-v2): console.log,
# pytest.log, junit.xml, and after a failure journal.log (the guest's engines' journal).
# Usage: scripts/ci/run-v2-tests.sh [PYTEST-ARGS...]      (root)
set -uo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
GUEST=${VAC_V2_GUEST_DIR:-/var/lib/vac-test/v2guest}
LOGDIR=${VAC_V2_LOGDIR:-/var/log/vac-v2}
STALL=${VAC_V2_STALL:-2400}
TIMEOUT=${VAC_V2_TIMEOUT:-14400}
MEMORY_MB=${VAC_V2_MEMORY_MB:-3072}
say() { printf '[run-v2-tests] %s\n' "$*" >&2; }
cannot() { say "cannot run: $*"; exit 2; }

[ "$(id -u)" = 0 ] || cannot "run as root"
for f in vmlinuz initrd.img rootfs.img cmdline; do
  [ -s "$GUEST/$f" ] || cannot "no $GUEST/$f: build the guest with scripts/ci/build-v2-guest.sh"
done
for tool in qemu-system-x86_64 qemu-img mkfs.ext4 debugfs git; do
  command -v "$tool" >/dev/null || cannot "no $tool on PATH"
done

# watch_stall PID WORK STALL: ends QEMU (WORK/qemu.pid) and leaves WORK/stalled once its
# console (WORK/console.log) has not grown for STALL seconds while PID runs.
watch_stall() {
  local pid=$1 dir=$2 limit=$3 size last grown=$SECONDS
  last=-1
  while kill -0 "$pid" 2>/dev/null; do
    size=$(stat -c %s "$dir/console.log" 2>/dev/null || echo 0)
    [ "$size" != "$last" ] && { last=$size; grown=$SECONDS; }
    if [ $((SECONDS - grown)) -ge "$limit" ]; then
      : >"$dir/stalled"
      kill "$(cat "$dir/qemu.pid" 2>/dev/null)" 2>/dev/null || kill "$pid"
      return
    fi
    sleep 5
  done
}

work=$(mktemp -d /var/tmp/vac-v2run.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$LOGDIR" "$work/src"
(cd "$REPO" && git ls-files -z -c -o --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | cpio -0 -pdm --quiet "$work/src") || { say "copying the tree failed"; exit 1; }
rm -rf "$work/src/.v2-results" "$work/src/.v2-args"
# The RPMs of this tree, built here (release 1, and 2 for an upgrade), for the systemd test in
# the guest (tests/integration/test_vacd_systemd.py installs them with rpm -i --nodeps).
rm -rf "$work/src/.v2-rpms"
if command -v rpmbuild >/dev/null; then
  for release in 1 2; do
    if "$REPO/scripts/build-rpm" --release "$release" "$work/rpmbuild-$release" >/dev/null 2>&1; then
      mkdir -p "$work/src/.v2-rpms/$release"
      cp "$work/rpmbuild-$release"/RPMS/noarch/*.rpm "$work/src/.v2-rpms/$release/"
    else
      say "scripts/build-rpm --release $release failed: the guest's systemd test will fail"
    fi
  done
fi
# The test VM guest (scripts/ci/build-test-guest.sh), for the VMs on LVM of
# tests/integration/test_lvm_libvirt.py, booted by the guest's own libvirtd.
VM_GUEST=${VAC_TEST_GUEST:-/var/lib/vac-test/guest}
if [ -s "$VM_GUEST/vmlinuz" ] && [ -s "$VM_GUEST/initrd.img" ]; then
  mkdir -p "$work/src/.v2-vmguest"
  cp "$VM_GUEST/vmlinuz" "$VM_GUEST/initrd.img" "$work/src/.v2-vmguest/"
  chmod 644 "$work/src/.v2-vmguest"/*
else
  say "no test VM guest in $VM_GUEST (scripts/ci/build-test-guest.sh): the guest's VM tests will fail"
fi
[ "$#" -eq 0 ] || printf '%s\n' "$@" >"$work/src/.v2-args"
mkfs.ext4 -q -F -L vac-v2-src -d "$work/src" "$work/src.img" 512M >/dev/null || { say "mkfs.ext4 of the tree failed"; exit 1; }
qemu-img create -q -f qcow2 -b "$GUEST/rootfs.img" -F raw "$work/root.qcow2" \
  || { say "qemu-img create of the overlay failed"; exit 1; }

# timeout --foreground: without it timeout puts QEMU in a process group of its own, which the
# caller's `kill -- -PGID` (scripts/run-tests, .ci/run when a step fails) does not reach.
# panic=-1 with -no-reboot: a guest kernel panic ends QEMU at once instead of at the timeout.
# thread=single: with multi-threaded TCG the guest kernel's live code patching on one vCPU
# can meet the other vCPU mid-instruction (seen once: "Oops: int3" in get_random_u32 at boot).
# no_timer_check: under TCG on a busy host the kernel's IO-APIC timer check can miss its ticks
# and panic at boot ("IO-APIC + timer doesn't work!", seen in a cloud-init guest beside a CPU hog).
cmdline="$(cat "$GUEST/cmdline") vac.v2run=1 quiet panic=-1 no_timer_check"
say "booting $(tr '\n' ' ' <"$GUEST/versions" 2>/dev/null)under TCG (stopped after $STALL s with nothing new on its console; console $LOGDIR/console.log)"
t0=$SECONDS
: >"$work/console.log"
timeout --foreground --kill-after=10 "$TIMEOUT" qemu-system-x86_64 -machine pc -accel tcg,thread=single \
  -smp 2 -m "$MEMORY_MB" -display none -monitor none -no-reboot -nic none \
  -serial "file:$work/console.log" -pidfile "$work/qemu.pid" \
  -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initrd.img" -append "$cmdline" \
  -drive "file=$work/root.qcow2,if=virtio,format=qcow2" \
  -drive "file=$work/src.img,if=virtio,format=raw" >"$work/qemu.log" 2>&1 &
guest=$!
watch_stall "$guest" "$work" "$STALL" &
watcher=$!
wait "$guest"
qrc=$?
kill "$watcher" 2>/dev/null
wait "$watcher" 2>/dev/null
took=$((SECONDS - t0))
grep -aq 'Kernel panic' "$work/console.log" && say "the guest kernel panicked (console: $LOGDIR/console.log)"
cp "$work/console.log" "$LOGDIR/console.log" 2>/dev/null || true
rm -f "$LOGDIR/pytest.log" "$LOGDIR/junit.xml" "$LOGDIR/journal.log"
for f in pytest.log junit.xml journal.log; do
  debugfs -R "dump /.v2-results/$f $LOGDIR/$f" "$work/src.img" >/dev/null 2>&1 || true
done
grep -a '^VAC-V2: ' "$work/console.log" | tr -d '\r' >&2 || true
if [ -e "$work/stalled" ]; then
  say "FAILED: the guest stalled: nothing new on its console for $STALL s, $took s after boot; its last lines:"
  tail -n 5 "$work/console.log" | tr -d '\r' | sed 's/^/    /' >&2
  exit 1
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
  say "FAILED: the guest did not finish within the cap of $TIMEOUT s (console: $LOGDIR/console.log)"
  exit 1
fi
[ "$qrc" = 0 ] || { say "FAILED: qemu exited $qrc: $(tail -n 5 "$work/qemu.log")"; exit 1; }
[ -s "$LOGDIR/pytest.log" ] && tail -n 40 "$LOGDIR/pytest.log" >&2
rc=$(grep -a '^VAC-V2: exit ' "$work/console.log" | tr -d '\r' | awk '{ print $3 }' | tail -n 1)
case $rc in
  0) say "ok: guest tests passed ($took s from boot to power-off)"; exit 0 ;;
  "") say "FAILED: the guest powered off without saying how its tests ended"; exit 1 ;;
  *) say "FAILED: guest tests exit $rc ($took s; logs in $LOGDIR)"; exit 1 ;;
esac
