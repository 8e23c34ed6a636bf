# SPDX-License-Identifier: BSD-2-Clause
"""ApptainerBackend on the real Apptainer, as root starting containers as singularity_user.

Needs scripts/ci/setup-apptainer.sh (apptainer, the user vacsngly, the busybox sandbox image).
Machine directories are prepared as the factory prepares them (slot record, MachineDir, MJF,
user_data). Each test uses its own cgroup parent (vac-test-<random>) and its own state
directory under /var/tmp (pytest's tmp_path is under a 0700 directory the user cannot enter),
and teardown kills and removes everything under that parent.
"""
from __future__ import annotations

import dataclasses
import os
import pwd
import subprocess
import time

import pytest
from apptainer_backend_env import Env
from apptainer_env import USER, require_root, require_usable, user_uid
from waiting import GENEROUS

from vac.backends.apptainer.backend import ApptainerBackend
from vac.errors import BackendError
from vac.host import procs
from vac.machine.directory import MachineState

pytestmark = [pytest.mark.apptainer, pytest.mark.root]

@pytest.fixture
def env(make_config, tmp_path):
    require_root()
    e = Env(make_config, tmp_path)
    require_usable(e.backend)
    yield e
    e.cleanup()


def test_probe_reports_the_version(env):
    probe = env.backend.probe()
    assert probe.available
    assert probe.version.startswith(("apptainer ", "singularity "))


def test_machine_runs_as_the_user_with_its_binds_hostname_mjf_and_cgroup(env):
    payload = r"""
echo hello from the payload
O=/tmp/joboutputs
id -u > $O/uid
hostname > $O/hostname
cat /tmp/machinefeatures/total_cpu > $O/total_cpu
cat /tmp/machinefeatures/site_flavour > $O/flavour
cat /tmp/jobfeatures/allocated_cpu > $O/allocated_cpu
echo "$MACHINEFEATURES $JOBFEATURES $JOBOUTPUTS" > $O/env
head -c 9 /user_data > $O/user_data_head
if echo x > /tmp/machinefeatures/new 2>/dev/null; then echo rw; else echo ro; fi > $O/mjf_mode
grep -E '^[0-9]+:memory:|^0::' /proc/self/cgroup > $O/cgroup
grep NoNewPrivs /proc/self/status | tr -d ' \t' > $O/nnp
echo "200 Intended work completed" > $O/shutdown_message
"""
    spec = env.machine(payload, processors=2)
    job_id = env.backend.create(spec)
    status = env.wait(spec, MachineState.SHUTDOWN)
    assert status.state == MachineState.SHUTDOWN
    assert status.exit_code == 0
    out = spec.directory.file("joboutputs")

    def read(name):
        with open(os.path.join(out, name)) as f:
            return f.read().strip()

    assert read("uid") == str(user_uid())
    assert read("hostname") == spec.name
    assert read("total_cpu") == "2"
    assert read("allocated_cpu") == "2"
    assert read("flavour") == "vanilla"
    assert read("env") == "/tmp/machinefeatures /tmp/jobfeatures /tmp/joboutputs"
    assert read("user_data_head") == "#!/bin/sh"
    assert read("mjf_mode") == "ro"
    v2 = env.backend.hierarchy.version == 2
    line = [x for x in read("cgroup").splitlines() if x.startswith("0::") == v2][0]
    leaf = "/leaf" if v2 else ""   # v2: the leaf of the cgroup delegated to the payload
    assert line.endswith(f":/{env.parent}/apptainer-{spec.name}{leaf}")
    assert read("nnp") == "NoNewPrivs:1"  # Apptainer sets no_new_privs for the payload
    pid = int(job_id.split("-", 1)[0])
    assert job_id == f"{pid:06d}-{spec.uuid}"
    assert spec.directory.read_backend_record()["job_id"] == job_id  # job_id file: the UUID
    assert status.backend_id == job_id
    with open(spec.directory.file("console.log")) as f:
        assert "hello from the payload" in f.read()
    final = env.backend.collect(spec.name, spec.directory)
    assert spec.directory.shutdown_message == "200 Intended work completed"
    assert not final.oom_killed
    env.backend.destroy(spec.name, spec.directory)
    assert not env.cgroup(spec).exists()


def test_memory_limit_kills_a_payload_that_allocates_past_it(env):
    # 64 MiB, not less: apptainer's starter is in the machine's cgroup too, about 26 MB resident
    # (cgroup v2 guest); near that the OOM killer may choose it instead of dd (seen with 32).
    env.configure(mb=64)
    spec = env.machine("dd if=/dev/zero of=/dev/null bs=200M count=1\n"
                       "echo dd=$? > /tmp/joboutputs/dd")
    env.backend.create(spec)
    assert env.cgroup(spec).memory_limit() == 64 * 1024 * 1024
    status = env.wait(spec, MachineState.SHUTDOWN)
    assert status.state == MachineState.SHUTDOWN
    assert status.oom_killed
    with open(spec.directory.file("joboutputs/dd")) as f:
        assert f.read().strip() == "dd=137"  # SIGKILLed by the OOM killer
    final = env.backend.collect(spec.name, spec.directory)
    assert final.oom_killed
    assert spec.directory.shutdown_message == \
        "700 Vac: container killed by the OOM killer (memory limit 64 MiB)"
    env.backend.destroy(spec.name, spec.directory)
    assert env.backend.status(spec.name, spec.directory).oom_killed  # remembered


def test_cpu_seconds_are_counted_for_a_cpu_burning_payload(env):
    spec = env.machine("i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done\n"
                       "touch /tmp/joboutputs/burnt; sleep 1000")
    env.backend.create(spec)
    env.wait_for_file(spec.directory.file("joboutputs/burnt"))
    status = env.backend.status(spec.name, spec.directory)
    assert status.state == MachineState.RUNNING
    assert status.cpu_seconds > 0.2
    # Finishing's order: collect reads the last state, then destroy; destroy
    # itself no longer reads it.
    env.backend.collect(spec.name, spec.directory)
    env.backend.destroy(spec.name, spec.directory)
    final = env.backend.status(spec.name, spec.directory)
    assert final.state == MachineState.SHUTDOWN
    assert final.cpu_seconds >= status.cpu_seconds  # remembered after the cgroup has gone


def test_destroy_kills_every_process_not_only_the_head(env):
    spec = env.machine("sleep 1001 & sleep 1002 & sleep 1003 &\n"
                       "touch /tmp/joboutputs/spawned; exit 0")
    env.backend.create(spec)
    env.wait_for_file(spec.directory.file("joboutputs/spawned"))
    # The head has exited, but its background sleepers are still in the machine's cgroup.
    status = env.wait(spec, MachineState.SHUTDOWN)
    assert status.state == MachineState.SHUTDOWN and status.exit_code == 0
    deadline = time.monotonic() + GENEROUS
    while len(env.cgroup(spec).pids()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    left = env.cgroup(spec).pids()
    assert len(left) >= 3
    assert all(procs.read(p).uid == user_uid() for p in left)
    env.backend.destroy(spec.name, spec.directory)
    assert not env.cgroup(spec).exists()
    for pid in left:
        info = procs.read(pid)
        assert info is None or not info.alive or info.uid != user_uid()


def test_a_running_machine_is_destroyed_whole(env):
    spec = env.machine("sleep 1001 & sleep 1002 & touch /tmp/joboutputs/up; sleep 1000")
    env.backend.create(spec)
    env.wait_for_file(spec.directory.file("joboutputs/up"))
    assert env.backend.status(spec.name, spec.directory).state == MachineState.RUNNING
    pids = env.cgroup(spec).pids()
    assert len(pids) >= 4
    env.backend.destroy(spec.name, None)  # as the zombie pass calls it: by name only
    assert not env.cgroup(spec).exists()
    assert all(procs.read(p) is None or not procs.read(p).alive for p in pids)
    assert env.backend.status(spec.name, spec.directory).state == MachineState.SHUTDOWN


def test_a_restarted_vacd_adopts_a_running_machine_by_pid_and_start_time(env):
    spec = env.machine("touch /tmp/joboutputs/up; sleep 1000")
    job_id = env.backend.create(spec)
    env.wait_for_file(spec.directory.file("joboutputs/up"))
    fresh = env.new_backend()  # not the parent of the container
    status = fresh.status(spec.name, spec.directory)
    assert status.state == MachineState.RUNNING
    assert status.backend_id == job_id
    assert [s.name for s in fresh.list_machines()] == [spec.name]
    # A record naming another live process (ours: root, another start time) is not it.
    other = env.machine("sleep 1000", ordinal=2)
    record = spec.directory.read_backend_record()
    record.pop("version")
    record.update(pid=os.getpid(), start_time=procs.read(os.getpid()).start_time)
    other.directory.write_backend_record(record)
    assert fresh.status(other.name, other.directory).state == MachineState.SHUTDOWN
    # The same pid with another start time (a recycled pid) is not it either.
    record.update(pid=int(job_id.split("-")[0]), start_time=record["start_time"] + 1)
    other.directory.write_backend_record(record)
    assert fresh.status(other.name, other.directory).state == MachineState.SHUTDOWN
    fresh.destroy(spec.name, spec.directory)
    assert fresh.status(spec.name, spec.directory).state == MachineState.SHUTDOWN
    assert not env.cgroup(spec).exists()


def test_kill_strays_kills_user_processes_outside_live_machines(env, monkeypatch):
    live = env.machine("touch /tmp/joboutputs/up; sleep 1000")
    env.backend.create(live)
    env.wait_for_file(live.directory.file("joboutputs/up"))
    uid = user_uid()
    stray = subprocess.Popen(["sleep", "1000"], user=uid, group=pwd.getpwnam(USER).pw_gid,
                             extra_groups=[], start_new_session=True)
    empty = env.cgroup("gone.example.com")
    empty.create(1, 1 << 20)
    try:
        ours = {stray.pid} | env.cgroup(live).pids()
        real = procs.pids_of_user(uid)
        assert ours <= set(real)
        # Only touch this test's processes: other tests may be running containers as vacsngly.
        monkeypatch.setattr(procs, "pids_of_user", lambda u, root="/proc": [
            p for p in real if p in ours])
        assert env.backend.kill_strays([live.name]) == 1
        assert stray.wait(timeout=GENEROUS) == -9
        assert not empty.exists()
        assert env.backend.status(live.name, live.directory).state == MachineState.RUNNING
        assert env.backend.kill_strays([]) >= 1  # no live machine: its processes go too
        assert env.wait(live, MachineState.SHUTDOWN).state == MachineState.SHUTDOWN
        assert not env.cgroup(live).exists()
    finally:
        if stray.poll() is None:
            stray.kill()
            stray.wait()


def test_missing_image_and_missing_user_are_backend_errors(env):
    env.configure(2048, image="/var/lib/vac-test/no-such-image")
    spec = env.machine("true")
    with pytest.raises(BackendError, match="no-such-image does not exist"):
        env.backend.create(spec)
    assert not env.cgroup(spec).exists()
    backend = ApptainerBackend(dataclasses.replace(env.cfg.settings,
                                                   singularity_user="no-such-user-vac"),
                               cgroup_parent=env.parent)
    with pytest.raises(BackendError, match="does not exist"):
        backend.create(spec)
    assert not backend.probe().available
    assert not env.cgroup(spec).exists()
