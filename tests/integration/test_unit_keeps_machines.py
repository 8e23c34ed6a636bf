# SPDX-License-Identifier: BSD-2-Clause
"""Why `systemctl stop/restart vacd` leaves Apptainer machines running, shown on a real
Apptainer machine: systemd finds a unit's processes by the cgroup it tracks units with (the
unified hierarchy on cgroup v2, name=systemd on v1). On v2 the machine has left vacd's cgroup
for /vac/apptainer-<name>, so no KillMode reaches it; on v1 it is still in vacd's name=systemd
cgroup, so KillMode=process (signal vacd alone) is what keeps it, and the unit says so. Then
vacd's own process is killed, as systemd does, and the machine keeps running."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

import pytest
from apptainer_env import SANDBOX, remove_cgroups, require_root, require_usable
from testbed import REPO
from waiting import ENGINE_CALL, GENEROUS

from vac.backends.apptainer.backend import ApptainerBackend
from vac.config import load
from vac.host import cgroupmachine, cgroups, procs
from vac.host.facts import HostFacts

pytestmark = [pytest.mark.apptainer, pytest.mark.root]

CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = vac01.example.com
factory_name = {factory}
state_dir = {state}
singularity_user = vacsngly

[machinetype app]
machine_model = apptainer
target_share = 1
root_image = {image}
user_data = /dev/null
"""
# The stand-in for vacd: creates one machine exactly as vacd's cycle does, prints its pid
# and the machine's, then waits to be killed. (A whole vacd would also run the zombie
# killer over every vacsngly process of the host, other tests' machines included.)
CREATOR = textwrap.dedent("""
    import sys, time, uuid
    from vac.backends.apptainer.backend import ApptainerBackend
    from vac.backends.base import MachineSpec
    from vac.config import load
    from vac.host.facts import HostFacts
    from vac.machine import mjf
    from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
    from vac.machine.slots import Slot, machine_name
    conf, parent, factory = sys.argv[1:4]
    cfg = load.build(load.read_raw([conf]), HostFacts.read())
    s, mt = cfg.settings, cfg.machinetypes["app"]
    name, now = machine_name(factory, 1), int(time.time())
    write_slot_record(s.paths, name, SlotRecord(now, "app", "apptainer"))
    d = MachineDir.create(s.paths, now, "app", name)
    mjf.write_mjf(d, mjf.MjfContext(settings=s, machinetype=mt, processors=1,
                                    shutdown_time=now + 600, now=now, job_id=None))
    d.write("user_data", "#!/bin/sh\\nwhile true; do date > $JOBOUTPUTS/beat; sleep 0.2; done\\n",
            mode=0o755)
    spec = MachineSpec(name=name, machinetype=mt, settings=s, slot=Slot(1, name),
                       processors=1, memory_mb=512, created=now, shutdown_time=now + 600,
                       uuid=str(uuid.uuid4()), directory=d)
    job_id = ApptainerBackend(s, cgroup_parent=parent).create(spec)
    print(job_id.split("-", 1)[0], d.path, flush=True)
    time.sleep(600)
""")


@pytest.fixture
def world():
    require_root()
    state = tempfile.mkdtemp(prefix="vac-unit-", dir="/var/tmp")
    os.chmod(state, 0o755)
    tag = uuid.uuid4().hex[:8]
    factory, parent = f"u{tag}.example.com", f"vac-test-{tag}"
    conf = os.path.join(state, "vac.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(engine_call=ENGINE_CALL,
                            factory=factory, state=os.path.join(state, "state"), image=SANDBOX))
    cfg = load.build(load.read_raw([conf]), HostFacts.read())
    cfg.settings.paths.ensure()
    backend = ApptainerBackend(cfg.settings, cgroup_parent=parent)
    require_usable(backend)
    yield conf, parent, factory, backend
    remove_cgroups(backend.hierarchy, parent)
    shutil.rmtree(state, ignore_errors=True)


def _unit_key(backend) -> str:
    return "" if backend.hierarchy.version == 2 else "name=systemd"


def test_stopping_vacd_as_systemd_does_leaves_the_apptainer_machine_running(world):
    conf, parent, factory, backend = world
    creator = subprocess.Popen([sys.executable, "-c", CREATOR, conf, parent, factory],
                               cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                               stdout=subprocess.PIPE, text=True)
    try:
        head, machine_dir = creator.stdout.readline().split()
        head = int(head)
        key = _unit_key(backend)
        mine, theirs = procs.cgroups_of(creator.pid), procs.cgroups_of(head)
        assert key in mine and key in theirs, (mine, theirs)
        if key == "":  # cgroup v2: out of the unit's cgroup altogether
            assert theirs[key].startswith(f"/{parent}/apptainer-"), theirs
            assert not theirs[key].startswith(mine[key].rstrip("/") + "/")
        else:          # cgroup v1: only KillMode=process spares it
            assert theirs[key] == mine[key]
            with open(os.path.join(REPO, "etc", "systemd", "vacd.service")) as f:
                assert "\nKillMode=process\n" in f.read()
        assert theirs[cgroups.membership_key(backend.hierarchy)].startswith(
            f"/{parent}/apptainer-")
        creator.send_signal(signal.SIGTERM)  # what systemd sends to vacd (the main process)
        creator.wait(timeout=10)
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait(timeout=10)
        creator.stdout.close()
    beat = os.path.join(machine_dir, "joboutputs", "beat")
    deadline = time.monotonic() + GENEROUS
    while not os.path.exists(beat):
        assert time.monotonic() < deadline, "the machine never wrote its heartbeat"
        time.sleep(0.05)
    first = os.stat(beat).st_mtime_ns
    time.sleep(1.0)
    assert os.stat(beat).st_mtime_ns > first, "the machine stopped with its creator"
    assert procs.cgroups_of(head), "the machine's head process is gone"
    name = os.path.basename(machine_dir).split("_")[-1]
    cg = cgroupmachine.MachineCgroup(backend.hierarchy, f"apptainer-{name}", parent)
    assert cg.pids(), "the machine's cgroup is empty"
