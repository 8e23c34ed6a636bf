# SPDX-License-Identifier: BSD-2-Clause
"""Switching a running Vac 03 factory (Singularity): its machines are adopted, not killed.

The machine is started the way the original did: its directory in the
original's layout with `pid` and jobfeatures/job_id, a process that joined the cpu and memory
cgroups `<parent>/singularity-<job_id>` (cpu.shares, memory.soft_limit_in_bytes), chdir /tmp,
dropped to singularity_user and exec'd `apptainer exec --contain --workdir <dir>/mnt --bind
...:/tmp/machinefeatures ... <image> /user_data`. Then the factory's cycles (vacd's Factory with
the real Apptainer backend, its own cgroup parent standing for `vac`, and the zombie killer
shown only this test's processes, as apptainer_world.World does) run on that state: the machine
keeps running through several cycles while a stray of the same user is killed, is heartbeated
with whole CPU seconds, and when its payload ends it is finished with its own
shutdown_message, accounted, its cgroup removed, and the slot refilled with a machine of ours.
"""
from __future__ import annotations

import glob
import os
import pwd
import subprocess
import time
import uuid

import pytest
from apptainer_env import SANDBOX, USER, require_root, require_usable
from apptainer_world import BURN, World, alive
from vac03_state import machine_dir, mark_started
from waiting import wait_until

from vac.backends.apptainer.launch import child_setup
from vac.host import cgroupmachine

pytestmark = [pytest.mark.apptainer, pytest.mark.root]

PAYLOAD = f"""#!/bin/sh
cd /tmp/joboutputs
{BURN}
{BURN}
touch burnt
while [ ! -e go ]; do sleep 0.2; done
echo "200 Success from vac03" > shutdown_message
"""


@pytest.fixture
def world(monkeypatch):
    require_root()
    w = World(monkeypatch)
    require_usable(w.backend)
    yield w
    w.cleanup()


def vac03_start(world: World, path: str, job_id: str, processors: int = 2,
                mb: int = 2048) -> subprocess.Popen:
    """The original's Singularity create: its cgroups (cpu and memory only), its argv."""
    user = pwd.getpwnam(USER)
    legacy = cgroupmachine.MachineCgroup(world.backend.hierarchy, f"singularity-{job_id}",
                                         world.parent)
    join = []
    for controller, name, value in (("cpu", "cpu.shares", 1024 * processors),
                                    ("memory", "memory.soft_limit_in_bytes",
                                     processors * mb * 1048576)):
        d = legacy.dir(controller)
        os.makedirs(d)
        with open(os.path.join(d, name), "w") as f:
            f.write(str(value))
        join.append(os.path.join(d, "cgroup.procs"))
    for sub in ("mnt", "joboutputs"):
        os.chown(os.path.join(path, sub), user.pw_uid, user.pw_gid)
    argv = ["apptainer", "exec", "--contain", "--workdir", f"{path}/mnt",
            "--bind", f"{path}/machinefeatures:/tmp/machinefeatures",
            "--bind", f"{path}/jobfeatures:/tmp/jobfeatures",
            "--bind", f"{path}/joboutputs:/tmp/joboutputs",
            "--bind", f"{path}/user_data:/user_data", SANDBOX, "/user_data"]
    proc = subprocess.Popen(argv, cwd="/tmp", stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin", "HOME": user.pw_dir},
                            preexec_fn=child_setup(join, user.pw_uid, user.pw_gid, []))
    with open(os.path.join(path, "pid"), "w") as f:
        f.write(str(proc.pid))
    world.stray_procs.append(proc)      # reaped (or killed) by the World's cleanup
    return proc


def test_vac03_singularity_machine_is_adopted_finished_accounted_and_slot_refilled(world):
    with open(world.conf) as f:
        text = f.read()
    with open(world.conf, "w") as f:
        f.write(text.replace("max_wallclock_seconds", "fizzle_seconds = 1\nmax_wallclock_seconds"))
    job_id = str(uuid.uuid4())                       # 03.00.02: the UUID is the job_id
    path = machine_dir(world.state, world.name, "app", "singularity", PAYLOAD, processors=2,
                       mb=2048)
    head = vac03_start(world, path, job_id)
    mark_started(path, job_id)
    legacy = cgroupmachine.MachineCgroup(world.backend.hierarchy, f"singularity-{job_id}",
                                         world.parent)
    assert wait_until(lambda: os.path.exists(os.path.join(path, "joboutputs", "burnt")))
    stray = world.stray()
    for _ in range(4):
        report = world.cycle()
        assert report.created == [] and report.finished == [] and report.errors == [], report
        assert report.destroyed == [] and report.zombies == []
        time.sleep(0.5)
    assert head.poll() is None and alive(head.pid)             # adopted, not killed
    world.start()                                              # a restarted vacd
    for _ in range(2):
        report = world.cycle()
        assert report.finished == [] and report.errors == [] and report.zombies == []
    assert head.poll() is None and alive(head.pid)
    assert wait_until(lambda: stray.poll() is not None)           # the killer still works
    d = world.dir()
    assert d.path == path
    record = d.read_backend_record()
    assert record["adopted"] == "vac03" and record["pid"] == head.pid
    assert record["cgroup"] == f"/{world.parent}/singularity-{job_id}"
    beat = d.read("heartbeat")
    assert beat.split(" ")[0].strip().isdigit() and int(beat.split()[0]) >= 1, beat
    open(os.path.join(path, "joboutputs", "go"), "w").close()
    assert wait_until(lambda: head.poll() is not None)
    report = world.cycle()
    assert report.finished == [world.name] and report.errors == [], report
    assert report.created == [world.name]                      # the slot refilled at once
    old = world.backend.settings.paths.machine_dir(d.created, "app", world.name)
    with open(os.path.join(old, "joboutputs", "shutdown_message")) as f:
        assert f.read().strip() == "200 Success from vac03"
    assert os.path.exists(os.path.join(old, "finished"))
    assert not legacy.exists()
    apel = []
    for rec in glob.glob(os.path.join(world.state, "apel-archive", "*", "*")):
        with open(rec) as f:
            apel += [f.read()] if f"LocalJobId: {job_id}\n" in open(rec).read() else []
    assert len(apel) == 1 and "Queue: app\n" in apel[0], apel
    new = world.dir()
    assert new.path != path and "adopted" not in new.read_backend_record()
    assert world.cgroup().exists() and new.read_backend_record()["pid"] != head.pid
