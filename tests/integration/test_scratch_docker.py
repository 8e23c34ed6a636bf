# SPDX-License-Identifier: BSD-2-Clause
"""A Docker machine's bounded scratch on the real engine (issue 29): /scratch is a filesystem of
disk_gb_per_processor x processors, MJF scratch_limit_bytes says so, a payload that writes past
it gets ENOSPC there and ends with its own message while its neighbour keeps writing, the host
keeps its space, destroy removes the scratch and release_leftovers a finished machine's."""
from __future__ import annotations

import os
import time
import uuid

import pytest
import scratchpool
from testbed import require_engine
from waiting import ENGINE_CALL, GENEROUS, wait_until

from vac.backends.base import MachineSpec
from vac.backends.docker.backend import DockerBackend
from vac.machine import mjf, scratch
from vac.machine.directory import MachineDir, MachineState, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name

pytestmark = [pytest.mark.docker]

IMAGE = "vac-test/busybox:1"
ENGINE = "unix:///var/run/docker.sock"
FACTORY = f"sc{uuid.uuid4().hex[:8]}.example.com"   # this run's containers only
GB = 10 ** 9

CONF = f"""
[settings]
vac_space = space.example.com
factory_name = {FACTORY}
mb_per_processor = 64
docker_url = {ENGINE}
backend_timeout_seconds = {ENGINE_CALL:g}

[machinetype dock]
machine_model = docker
root_image = docker://{IMAGE}
target_share = 1
disk_gb_per_processor = 1
"""

FILL = r"""#!/bin/sh
cd "$JOBOUTPUTS"
cat /etc/jobfeatures/scratch_limit_bytes > limit
df -k /scratch | tail -1 > df
if dd if=/dev/zero of=/scratch/fill bs=1M count=1500 2> dd.err; then
  echo "500 the scratch took 1500 MB" > shutdown_message; exit 1
fi
grep -q "No space left on device" dd.err && echo enospc > result
echo "300 payload: scratch full (ENOSPC) as expected" > shutdown_message
exit 0
"""

NEIGHBOUR = r"""#!/bin/sh
cd "$JOBOUTPUTS"
while [ ! -e /scratch/go ]; do
  dd if=/dev/zero of=/scratch/mine bs=1M count=50 2>/dev/null || { echo failed > result; exit 1; }
  sleep 1
done
dd if=/dev/zero of=/scratch/after bs=1M count=100 2>/dev/null && echo wrote > result
echo "200 neighbour done" > shutdown_message
"""


def remove_pool(state: str) -> None:
    """Every scratch (and capped joboutputs) of the test's state directory (teardown)."""
    scratchpool.remove_pool(state)


@pytest.fixture
def backend(make_config):
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    config = make_config(CONF)
    b = DockerBackend(config.settings)
    b.config = config
    probe = b.probe()
    require_engine("docker", probe.available, probe.reason)
    yield b
    api = b._client()
    for c in api.containers(all=True, filters={"label": f"vac.factory={FACTORY}"}):
        api.remove_container(c["Id"], force=True)
    remove_pool(config.settings.paths.state_dir)


def make_machine(paths, backend: DockerBackend, ordinal: int, payload: str,
                 processors: int = 1) -> MachineSpec:
    settings, mt = backend.config.settings, backend.config.machinetypes["dock"]
    name = machine_name(settings.factory_name, ordinal)
    created = int(time.time())
    write_slot_record(paths, name, SlotRecord(created, mt.name, mt.machine_model))
    directory = MachineDir.create(paths, created, mt.name, name)
    mjf.write_mjf(directory, mjf.MjfContext(settings=settings, machinetype=mt,
                                            processors=processors, shutdown_time=created + 600,
                                            now=created, job_id=None))
    directory.write("user_data", payload, mode=0o644)
    return MachineSpec(name=name, machinetype=mt, settings=settings, slot=Slot(ordinal, name),
                       processors=processors, memory_mb=64 * processors, created=created,
                       shutdown_time=created + 600, uuid=str(uuid.uuid4()), directory=directory)


def ended(backend: DockerBackend, spec: MachineSpec) -> bool:
    return wait_until(lambda: backend.status(spec.name, spec.directory).state
                      is MachineState.SHUTDOWN, GENEROUS)


def test_payload_filling_its_scratch_gets_enospc_alone(paths, backend):
    state = backend.settings.paths.state_dir
    host_free = os.statvfs(state).f_bavail * os.statvfs(state).f_frsize
    neighbour = make_machine(paths, backend, 1, NEIGHBOUR, processors=2)
    backend.create(neighbour)
    filler = make_machine(paths, backend, 2, FILL)
    backend.create(filler)
    area = scratch.mount_point(state, os.path.basename(filler.directory.path))
    assert scratch.is_mounted(area)
    assert ended(backend, filler), "the filling payload did not end"
    out = lambda spec, key: (spec.directory.read(f"joboutputs/{key}") or "").strip()  # noqa
    assert out(filler, "limit") == str(GB)
    assert filler.directory.read("jobfeatures/scratch_limit_bytes") == str(GB)
    assert out(filler, "result") == "enospc", filler.directory.read("joboutputs/dd.err")
    assert filler.directory.shutdown_message == "300 payload: scratch full (ENOSPC) as expected"
    assert backend.status(filler.name, filler.directory).exit_code == 0
    used = scratch.used_bytes(state, os.path.basename(filler.directory.path))
    assert used is not None and 0.9 * GB < used <= GB
    # the neighbour still writes into its own scratch (2 GB: two processors)
    n_area = scratch.mount_point(state, os.path.basename(neighbour.directory.path))
    assert os.statvfs(n_area).f_blocks * os.statvfs(n_area).f_frsize > 1.5 * GB
    open(os.path.join(n_area, "go"), "w").close()
    assert ended(backend, neighbour), "the neighbour did not end"
    assert out(neighbour, "result") == "wrote"
    assert neighbour.directory.shutdown_message == "200 neighbour done"
    # the host lost no more than the filled scratch
    now_free = os.statvfs(state).f_bavail * os.statvfs(state).f_frsize
    assert host_free - now_free < 2 * GB
    backend.collect(filler.name, filler.directory)
    backend.destroy(filler.name, filler.directory)
    assert not scratch.is_mounted(area) and not os.path.exists(area)
    assert not os.path.exists(area + scratch.IMAGE_SUFFIX)
    backend.destroy(filler.name, filler.directory)     # again: nothing left, no error
    backend.destroy(neighbour.name, neighbour.directory)
    assert not scratch.is_mounted(n_area)


def test_finished_machines_scratch_removed_after_a_restart(paths, backend):
    state = backend.settings.paths.state_dir
    spec = make_machine(paths, backend, 3, "#!/bin/sh\necho x > /scratch/x\nsleep 600\n")
    backend.create(spec)
    area = scratch.mount_point(state, os.path.basename(spec.directory.path))
    assert scratch.is_mounted(area)
    fresh = DockerBackend(backend.settings)          # a new vacd: nothing in memory
    assert fresh.release_leftovers(paths.machines, FACTORY) == []    # alive: left alone
    assert scratch.is_mounted(area)
    api = fresh._client()
    api.remove_container(spec.name, force=True)      # the old vacd's container is gone
    spec.directory.write("finished", str(int(time.time())))
    assert os.path.basename(spec.directory.path) in \
        fresh.release_leftovers(paths.machines, FACTORY)
    assert not scratch.is_mounted(area) and not os.path.exists(area)


def test_create_again_keeps_the_machines_scratch_and_trial_stops_at_the_size(paths):
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    d = MachineDir.create(paths, int(time.time()), "dock", "sc-00.example.com")
    os.makedirs(d.file("jobfeatures"), exist_ok=True)
    state = paths.state_dir
    try:
        area = scratch.create(state, d, scratch.MIN_BYTES)
        with open(os.path.join(area, "kept"), "w") as f:
            f.write("yes")
        assert scratch.create(state, d, scratch.MIN_BYTES) == area     # adoption: same one
        assert open(os.path.join(area, "kept")).read() == "yes"
        assert oct(os.stat(area).st_mode & 0o7777) == "0o1777"
        assert 0 < scratch.trial(state) <= scratch.MIN_BYTES
    finally:
        scratch.remove(state, os.path.basename(d.path))
    assert not scratch.is_mounted(area) and os.listdir(scratch.pool(state)) == []
