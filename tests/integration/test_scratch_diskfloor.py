# SPDX-License-Identifier: BSD-2-Clause
"""Admission by free disk space on a real file system (issue 29, "thin, but safe"): the state
directory is a small loop-mounted ext4; while a file fills it below its floor, the cycle creates
nothing and every free slot says why (kind disk, naming the file system and its free bytes),
the running machines keep their heartbeats and plan.json has the reading; once the file is
removed, the next cycle creates again. The factory reads the real disk (vac.cycle.hostdisk)
and runs fake machines, so no engine is needed: only root and loop devices."""
from __future__ import annotations

import os
import shutil

import pytest
from testbed import require_engine

from vac import planfile, subp
from vac.backends.fake import FakeBackend
from vac.config import load
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory
from vac.cycle.hostdisk import HostDisk
from vac.errors import ProcessError
from vac.host.facts import HostFacts
from vac.machine.directory import MachineDir, read_slot_record

MIB = 1024 * 1024
HOST = HostFacts(fqdn="q8floor.example.com", processors=4, vg_exists=lambda name: False)
CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = q8floor.example.com
enable_fake_backend = true
overload_per_processor = 100
host_processors = 4
max_creations_per_cycle = 2
disk_floor_gb = 0.1
disk_floor_fraction = 0

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
fake_run_seconds = 100000
"""


@pytest.fixture
def small_state(tmp_path):
    """A 256 MiB ext4 loop-mounted at tmp_path/state, unmounted afterwards."""
    why = ("vacd is not root" if os.geteuid() != 0 else
           "" if os.path.exists("/dev/loop-control") and shutil.which("mkfs.ext4") else
           "no /dev/loop-control or mkfs.ext4")
    require_engine("loop-mounted file systems", not why, why)
    image, state = tmp_path / "state.img", tmp_path / "state"
    state.mkdir()
    with open(image, "wb") as f:
        f.truncate(256 * MIB)
    subp.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], timeout=120)
    subp.run(["mount", "-o", "loop", str(image), str(state)], timeout=60)
    try:
        yield state
    finally:
        try:
            subp.run(["umount", str(state)], timeout=60)
        except ProcessError:
            subp.run(["umount", "-l", str(state)], timeout=60)
        image.unlink()


def _factory(tmp_path, state):
    conf = tmp_path / "vac.conf"
    (tmp_path / "user_data").write_text("#!/bin/sh\n")
    conf.write_text(CONF.format(state=state, user_data=tmp_path / "user_data"))

    def read():
        return load.build(load.read_raw([str(conf)]), HOST)
    settings = read().settings
    pool = BackendPool(settings, {"fake": FakeBackend(settings)})
    return Factory(read, pool, loadavg=lambda: (0.0, 0.0, 0.0), disk=HostDisk()), settings


def _heartbeat(settings, name: str) -> str:
    directory = MachineDir.for_record(settings.paths, name,
                                      read_slot_record(settings.paths, name))
    return directory.file("heartbeat")


def _fill_below(path: str, floor: int) -> None:
    """Write a file until the file system has less than `floor` free (ENOSPC is not needed)."""
    with open(os.path.join(path, "filler"), "wb") as f:
        while True:
            st = os.statvfs(path)
            if st.f_bavail * st.f_frsize < floor - 8 * MIB:
                break
            f.write(b"\1" * 4 * MIB)
            f.flush()
            os.fsync(f.fileno())


def test_creation_stops_at_the_floor_and_resumes_when_space_returns(tmp_path, small_state):
    factory, settings = _factory(tmp_path, small_state)
    first = factory.run_cycle()
    assert len(first.created) == 2 and first.errors == []
    running = sorted(first.created)

    _fill_below(str(small_state), 100 * 1000 * 1000)
    stopped = factory.run_cycle()
    assert stopped.created == [] and stopped.errors == []
    record = planfile.read(settings.paths.plan)
    assert len(record.idle) == 2
    for why in record.idle.values():
        assert why.kind == planfile.DISK and why.resource == str(small_state)
        assert why.value is not None and why.value < 100e6
        assert why.text.startswith(f"disk: state directory {small_state} has ")
    assert [fs["path"] for fs in record.disk["filesystems"]] == [str(small_state)]
    # The running machines are still managed (observed, heartbeats written, counted).
    assert stopped.destroyed == [] and stopped.finished == []
    assert record.counts[0] == 2 and not set(running) & set(record.idle)
    for name in running:
        assert os.path.getmtime(_heartbeat(settings, name)) >= record.time - 1

    os.unlink(os.path.join(str(small_state), "filler"))
    resumed = factory.run_cycle()
    assert len(resumed.created) == 2 and resumed.errors == []
    assert planfile.read(settings.paths.plan).idle == {}
