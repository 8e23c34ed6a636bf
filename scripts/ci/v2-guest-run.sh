#!/usr/bin/env bash
# Runs INSIDE the cgroup v2 test guest (scripts/ci/build-v2-guest.sh; started at boot by its
# vac-v2-run.service from the tree under test, mounted at /vac-src): checks that the guest
# is what the tests are about (cgroup2 at /sys/fs/cgroup, systemd as PID 1, Docker's systemd
# cgroup driver), readies Podman if Podman tests are selected (podman_ready), runs the
# selected tests with CI=true and VAC_V2_GUEST=1, leaves pytest's log and JUnit XML in
# /vac-src/.v2-results/ and prints "VAC-V2: " lines on the console (the host
# side, scripts/ci/run-v2-tests.sh, reads them). Exit code: pytest's, or 3 if the guest is
# not a systemd cgroup v2 host.
#
# The selection (TESTS below), and why: the guest (single-threaded TCG, the slowest part of a
# whole run) runs what only a systemd cgroup v2 host can prove: cgroup parents as slices,
# limits, CPU seconds and OOM read from v2 files, processes killed and cgroups removed there,
# the unit's KillMode, doctor's cgroup check, the slice a
# killed destroy leaves. Left out, because they prove nothing new on v2 (each runs on the
# host, cgroup v1):
#   test_docker_backend.py    stale, foreign and missing-image/command containers, CVMFS binds:
#       the engine's API and mounts, no cgroup; the engine going away behind a 2 s proxy
#       (a container's creation takes longer than that under TCG);
#   test_apptainer_backend.py the version probe, missing image and user: no cgroup;
#   test_backend_contract.py  probe, listing and double destroy: the engine's API; kept are the
#       CPU seconds, destroy, adoption and a payload's exit (cgroup reads and removal);
#   test_hostile_guests.py    joboutputs symlinks, FIFOs, huge trees: the filesystem, no cgroup;
#   test_doctor.py            missing images, a dead engine, a 0700 parent: no cgroup (the
#       healthy setup, with the cgroup check, runs);
#   test_docker_cycle.py      the engine gone or hanging behind a 2 s proxy (as above); a
#       SIGKILLed vacd adopting its containers (16 s under TCG: test_cgroup_v2.py's adoption
#       tests read the same parents on v2);
#   test_apptainer_cycle.py   the [singularity] case of the first test: the same path as
#       [apptainer] under the other machine_model name (14 s);
#   test_accounting_docker.py the records (161 s under TCG) and the three kills in the record
#       step: a record's CPU seconds are the backend's status, which test_cgroup_v2.py proves
#       against what the payload burnt on v2; the rest is files and the queue, no cgroup;
#   test_engine_restarts.py   stops dockerd, which under systemd is not ours to start again;
#   test_crash_docker.py, test_crash_apptainer.py: the random-kill runs (100 lifecycles, about
#       4 minutes each under TCG) and the crash points of create, finish and destroy: the host
#       runs them all; only destroy:after-backend runs here (about 170 s), the one that leaves
#       a slice for release() to remove (destroy:after-message dies before the engine's call);
#   test_refill_engines.py, test_yield_docker.py: the engines' event streams and the host's
#       CPU from /proc/stat, the same on v1;
#   test_vac03_apptainer.py   makes the original's Singularity cgroups, which are v1 only
#       (cpu.shares, memory.soft_limit_in_bytes: Vac 03 knew no v2).
# test_cgroup_delegation.py: a payload subdividing its delegated v2 cgroup, the
# kernel's permission and nsdelegate refusals, OOM in a child; it skips on the v1 host.
# test_machine_pressure.py: a Docker machine's own pressure read from its slice's
# cpu/memory/io.pressure (the systemd driver's slice path; the host reads the cgroupfs one).
# Podman, rootful (podman.socket) and rootless (vacpodman's socket-activated service in its
# lingering systemd), with the systemd cgroup manager, which the CI host (cgroupfs, no systemd)
# cannot have: test_podman_v2.py (each machine's own scope, rootful in its own slice, rootless
# in the user's systemd; memory, CPU and pids limits from its cgroup files; the rootless
# payload's uid a subordinate id; a rootless machine adopted and ended by a backend made afresh;
# a rootless memory hog OOM-killed); from test_podman_backend.py a machine's life (its CPU
# seconds read at its end and at its collection agree within 0.01 s: with the systemd manager
# Podman runs conmon, and its exit command, a whole `podman container cleanup`, in the scope
# libpod-conmon-<id>.scope inside the machine's slice, whose count grows after the container
# has ended, by 0.07 s here, and keeps conmon's CPU once systemd has removed the scope;
# vac.backends.podman.conmon subtracts it and remembers the reading after the end; the slice
# removed by destroy after conmon has left it), OOM (v2 only: it skips on the v1 host) and a
# rootful machine adopted and destroyed by a backend made afresh, its slice removed; from
# test_podman_cycle.py finishing with CPU seconds from the slices, the slices removed, refill.
# Left out (each passed here when measured; 10 Podman tests took 961 s of pytest, too much
# beside the rest of the guest's budget): the SIGKILLed vacd tests of test_podman_cycle.py and
# test_podman_rootless.py (185 s and 145 s: a backend made afresh reads the same cgroups, as
# for Docker), test_podman_backend.py's limits (test_podman_v2.py reads them) and
# test_podman_rootless.py's first test (test_podman_v2.py's rootless one); the other Podman
# tests (the API, binds, events, refill: the same on v1) and the contract's [podman] and
# [podman-rootless] cases.
# test_lvm.py: LVM needs device-mapper, which only the guest's kernel has; and for VMs
# test_lvm_libvirt.py, on the guest's own libvirtd, its VMs (the test VM guest, which
# run-v2-tests.sh brings along in /vac-src/.v2-vmguest) under TCG inside the guest's TCG;
# scripts/run-tests runs this file in a second guest (start-v2-guest.sh ... vms).
# test_scratch_quota.py: XFS project quotas, which the CI host's kernel cannot mount (no quota
# support built in).
# Only here: test_vacd_systemd.py, vacd's RPMs (built on the host by run-v2-tests.sh) installed
# and run by this guest's systemd, PID 1; last, as it installs and removes packages
# (226 s of the guest's time when measured: 135 s of it the watchdog's 120 s after kill -STOP).
# Every other libvirt test: the host runs them (nothing of theirs differs on v2: QEMU is
# libvirtd's, not a machine's cgroup of Vac's). pytest prints each test's duration
# (--durations=0), and the console says how long the whole run took.
set -uo pipefail
cd /vac-src || exit 99
say() { echo "VAC-V2: $*"; }
RESULTS=/vac-src/.v2-results
mkdir -p "$RESULTS"
TESTS=(
  tests/integration/test_cgroup_v2.py
  tests/integration/test_cgroup_delegation.py
  tests/integration/test_machine_pressure.py
  tests/integration/test_docker_backend.py::test_payload_reads_mjf_writes_joboutputs_and_finishes
  tests/integration/test_docker_backend.py::test_inspect_shows_labels_limits_binds_and_no_privileges
  tests/integration/test_docker_backend.py::test_hard_cpu_and_soft_memory_options
  tests/integration/test_docker_backend.py::test_pause_adoption_idempotent_create_and_listing
  tests/integration/test_docker_backend.py::test_oom_killed_machine_gets_a_coded_shutdown_message
  tests/integration/test_docker_backend.py::test_oom_does_not_overwrite_the_machines_own_message
  tests/integration/test_apptainer_backend.py::test_machine_runs_as_the_user_with_its_binds_hostname_mjf_and_cgroup
  tests/integration/test_apptainer_backend.py::test_memory_limit_kills_a_payload_that_allocates_past_it
  tests/integration/test_apptainer_backend.py::test_cpu_seconds_are_counted_for_a_cpu_burning_payload
  tests/integration/test_apptainer_backend.py::test_destroy_kills_every_process_not_only_the_head
  tests/integration/test_apptainer_backend.py::test_a_running_machine_is_destroyed_whole
  tests/integration/test_apptainer_backend.py::test_a_restarted_vacd_adopts_a_running_machine_by_pid_and_start_time
  tests/integration/test_apptainer_backend.py::test_kill_strays_kills_user_processes_outside_live_machines
  tests/contract/test_backend_contract.py::test_cpu_seconds_never_decrease
  tests/contract/test_backend_contract.py::test_a_new_backend_instance_adopts_the_running_machine
  tests/contract/test_backend_contract.py::test_destroy_then_shutdown
  tests/contract/test_backend_contract.py::test_a_payload_that_exits_is_shutdown_and_collected
  tests/integration/test_docker_cycle.py
  tests/integration/test_apptainer_cycle.py
  tests/integration/test_vac03_docker.py
  tests/integration/test_unit_keeps_machines.py
  tests/integration/test_doctor.py::test_healthy_docker_setup_passes
  "tests/integration/test_crash_docker.py::test_a_kill_at_each_crash_point_is_recovered[destroy:after-backend]"
  tests/integration/test_podman_v2.py
  tests/integration/test_podman_backend.py::test_payload_reads_mjf_writes_joboutputs_and_destroy_leaves_nothing
  tests/integration/test_podman_backend.py::test_oom_killed_machine_gets_a_coded_shutdown_message
  tests/integration/test_podman_backend.py::test_adoption_by_a_new_backend_idempotent_create_and_listing
  tests/integration/test_podman_cycle.py::test_exited_machines_are_finished_accounted_removed_and_refilled
  tests/integration/test_lvm.py
  tests/integration/test_lvm_libvirt.py
  tests/integration/test_scratch_quota.py
  tests/integration/test_vacd_systemd.py
)
DESELECT=(
  # the guest's libvirtd serves only the VMs on LVM (above)
  -k "not libvirt or lvm_libvirt"
  --deselect tests/integration/test_docker_cycle.py::test_engine_gone_or_hanging_leaves_machines_alone_then_management_resumes
  --deselect tests/integration/test_docker_cycle.py::test_sigkilled_vacd_restarted_adopts_its_containers
  --deselect "tests/integration/test_apptainer_cycle.py::test_a_machine_runs_as_the_user_and_is_finished_by_the_next_cycle[singularity]"
)
for t in test_cpu_seconds_never_decrease test_a_new_backend_instance_adopts_the_running_machine \
  test_destroy_then_shutdown test_a_payload_that_exits_is_shutdown_and_collected; do
  for b in podman podman-rootless; do
    DESELECT+=(--deselect "tests/contract/test_backend_contract.py::$t[$b]")
  done
done

say "kernel $(uname -r), $(systemctl --version | head -n 1), $(stat -fc %T /sys/fs/cgroup) at /sys/fs/cgroup"
say "pid 1 $(cat /proc/1/comm); nproc $(nproc); $(free -m | awk '/^Mem:/ { print $2 " MiB" }')"
deadline=$((SECONDS + 120))
until driver=$(docker info -f '{{.CgroupDriver}} {{.CgroupVersion}} {{.ServerVersion}}' 2>/dev/null); do
  if [ "$SECONDS" -ge "$deadline" ]; then
    say "docker not answering after 120 s"
    systemctl status --no-pager docker.service docker.socket containerd.service 2>&1 | tail -n 40
    journalctl -b --no-pager -u docker.service -u containerd.service 2>&1 | tail -n 40
    exit 3
  fi
  sleep 1
done
say "docker: driver, cgroup version, version = $driver"
say "$(apptainer --version), $(python3 --version)"
systemctl is-active --quiet vac-v2-images.service || /usr/local/sbin/vac-v2-images
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ] || [ "$(cat /proc/1/comm)" != systemd ] \
  || [ "${driver%% *}" != systemd ]; then
  say "not a systemd cgroup v2 host with Docker's systemd driver; nothing run"
  exit 3
fi

extra=()
[ -s /vac-src/.v2-args ] && mapfile -t extra </vac-src/.v2-args
for arg in "${extra[@]}"; do   # naming test files replaces the selection
  case $arg in tests/*) TESTS=(); DESELECT=(); break ;; esac
done
# Podman: the test image in both engines (vac-v2-podman-images.service, started at boot, waited
# for here), what each engine is, and a rootless container on the default network. Rootless
# networks are pasta's (Debian 13's default); if pasta cannot run one in this guest (it has no
# network interface but lo), vacpodman's Podman is switched to slirp4netns, loudly: the network
# helper is not what these tests are about. Both API services are kept running between requests
# (--time=0; socket activation still starts one again after a crash): with the default 5 s idle
# exit, a test after a pause started the service anew, which under TCG beside other guests took
# more than the 30 s of a /version.
podman_ready() {
  local uid rl conf out sock user_units
  export HOME=/root
  uid=$(id -u vacpodman)
  rl=/run/user/$uid/podman/podman.sock
  user_units=/var/lib/vacpodman/.config/systemd/user/podman.service.d
  mkdir -p /etc/systemd/system/podman.service.d "$user_units"
  printf '[Service]\nExecStart=\nExecStart=/usr/bin/podman $LOGGING system service --time=0\n' \
    | tee /etc/systemd/system/podman.service.d/50-vac-v2.conf >"$user_units/50-vac-v2.conf"
  chown -R vacpodman: /var/lib/vacpodman/.config/systemd
  systemctl daemon-reload
  runuser -u vacpodman -- env XDG_RUNTIME_DIR="/run/user/$uid" systemctl --user daemon-reload
  if ! systemctl start vac-v2-podman-images.service; then
    say "the test image is not in Podman: vac-v2-podman-images.service failed"
    journalctl -b --no-pager -u vac-v2-podman-images.service 2>&1 | tail -n 30
    systemctl status --no-pager "user@$uid.service" 2>&1 | tail -n 20
    return
  fi
  for sock in /run/podman/podman.sock "$rl"; do
    say "podman at $sock: $(podman --url "unix://$sock" info -f '{{.Version.Version}}, manager {{.Host.CgroupManager}}, cgroup {{.Host.CgroupsVersion}} {{.Host.CgroupControllers}}, runtime {{.Host.OCIRuntime.Name}}, network {{.Host.NetworkBackend}}' 2>&1 | tail -n 1)"
  done
  say "rootless network command: $(podman --url "unix://$rl" info -f '{{.Host.RootlessNetworkCmd}}' 2>&1 | tail -n 1)"
  out=$(timeout 300 podman --url "unix://$rl" run --rm vac-test/busybox:1 true 2>&1) && return
  say "a rootless container on the default network failed: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
  case $out in *pasta*) ;; *) return ;; esac
  conf=/var/lib/vacpodman/.config/containers/containers.conf
  printf '[network]\ndefault_rootless_network_cmd = "slirp4netns"\n' >"$conf"
  chown vacpodman: "$conf"
  runuser -u vacpodman -- env XDG_RUNTIME_DIR="/run/user/$uid" systemctl --user restart podman.service
  if out=$(timeout 300 podman --url "unix://$rl" run --rm vac-test/busybox:1 true 2>&1); then
    say "WARNING: pasta failed here; vacpodman's Podman now uses slirp4netns ($conf)"
  else
    say "with slirp4netns too: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
  fi
}
if printf '%s\n' "${TESTS[@]}" "${extra[@]}" | grep -q podman; then
  podman_ready
fi

# -v: each test named as it runs, so a guest stopped at its timeout still says where it was.
export CI=true VAC_V2_GUEST=1 PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/vac-src HOME=/root
export VAC_TEST_GUEST=/vac-src/.v2-vmguest
t0=$SECONDS
python3 -m pytest -p no:cacheprovider -v -o addopts="--strict-markers -ra" --durations=0 \
  --junitxml="$RESULTS/junit.xml" "${DESELECT[@]}" "${TESTS[@]}" "${extra[@]}" 2>&1 | tee "$RESULTS/pytest.log"
rc=${PIPESTATUS[0]}
say "pytest exit $rc after $((SECONDS - t0)) s"
# The engines' side of a failure: their journal since boot (the host copies it out with
# pytest's log, into VAC_V2_LOGDIR/journal.log).
if [ "$rc" -ne 0 ]; then
  journalctl -b --no-pager -o short-monotonic -u docker.service -u containerd.service \
    -u podman.service -u vac-v2-images.service 2>&1 | tail -n 3000 >"$RESULTS/journal.log"
fi
say "cgroups left: $(find /sys/fs/cgroup -type d \( -name 'vac*' -o -name 'docker-*' -o -name 'libpod-*' \) | grep -v '^/sys/fs/cgroup/vac.slice$' | tr '\n' ' ')"
exit "$rc"
