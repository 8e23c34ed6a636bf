# SPDX-License-Identifier: BSD-2-Clause
"""The disk as vacd's cycle measures it on the real Docker engine: a machine that writes into
its /scratch has the bytes in use in its heartbeat file (the cycle's disk reading, written
with its heartbeats), `vac slots` (slot_rows) says the same bytes, plan.json has them too, and
the cycle's reading watches the engine's data root under its label, "docker data root"."""
from __future__ import annotations

import os
import time

import pytest
from docker_engine import engine_ready
from dockerfactory import DockerFactory
from scratchpool import remove_pool
from waiting import wait_until

from vac import planfile
from vac.machine import scratch
from vac.slotview import slot_rows

pytestmark = [pytest.mark.docker]

MIB = 1024 * 1024
WRITE = r"""#!/bin/sh
dd if=/dev/zero of=/scratch/data bs=1M count=64 2>/dev/null
sync
touch /scratch/written
sleep 600
"""


@pytest.fixture
def dock(tmp_path, make_config):
    if os.geteuid() != 0:
        pytest.skip("loop mounts need root")
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    yield world
    world.remove_all()
    remove_pool(world.state)


def test_the_cycle_puts_each_scratchs_bytes_in_its_heartbeat_and_watches_the_data_root(dock):
    dock.write(WRITE, slots=1, extra_mt="disk_gb_per_processor = 1")
    [name] = dock.slots(1)
    first = dock.cycle()
    assert first.created == [name] and first.errors == []
    directory = dock.dir(name)
    area = scratch.mount_point(dock.state, os.path.basename(directory.path))
    assert wait_until(lambda: os.path.exists(os.path.join(area, "written"))), area
    report = dock.cycle()
    assert report.errors == [] and report.created == []
    used = directory.scratch_bytes
    assert used is not None and used >= 64 * MIB, directory.read("heartbeat")
    rows = {r["name"]: r for r in slot_rows(dock.load(), time.time())}
    assert rows[name]["scratch_bytes"] == used
    assert rows[name]["scratch_limit_bytes"] == 1_000_000_000
    record = planfile.read(dock.load().settings.paths.plan)
    assert record.disk["scratch_used_bytes"][os.path.basename(directory.path)] == used
    holds = [label for fs in record.disk["filesystems"] for label in fs["holds"]]
    assert "docker data root" in holds, record.disk
