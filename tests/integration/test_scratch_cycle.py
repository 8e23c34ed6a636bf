# SPDX-License-Identifier: BSD-2-Clause
"""Scratch through vacd's cycle on the real Docker engine (issue 29): the factory gives each
machine its /scratch, a machine that fills it ends with its own message after ENOSPC, the cycle
finishes it without errors, its scratch is gone, and the slot is refilled with a fresh one."""
from __future__ import annotations

import os

import pytest
from docker_engine import engine_ready
from dockerfactory import DockerFactory, all_exited
from scratchpool import remove_pool
from waiting import wait_until

from vac.machine import scratch


pytestmark = [pytest.mark.docker]

FILL = r"""#!/bin/sh
cd "$JOBOUTPUTS"
dd if=/dev/zero of=/scratch/fill bs=1M count=1500 2> dd.err
grep -q "No space left on device" dd.err && \
  echo "200 payload: scratch of $(cat /etc/jobfeatures/scratch_limit_bytes) bytes full" \
  > shutdown_message
exit 0
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


def test_filled_scratch_ends_its_machine_alone_and_the_slot_gets_a_fresh_one(dock):
    dock.write(FILL, slots=2, extra_mt="disk_gb_per_processor = 1")
    names = dock.slots(2)
    first = dock.cycle()
    assert sorted(first.created) == names and first.errors == []
    old = {n: dock.dir(n) for n in names}
    areas = {n: scratch.mount_point(dock.state, os.path.basename(d.path))
             for n, d in old.items()}
    assert all(scratch.is_mounted(a) for a in areas.values())
    assert wait_until(lambda: all_exited(dock, 2)), dock.containers()
    report = dock.cycle()
    assert sorted(report.finished) == names and report.errors == []
    for name, d in old.items():
        assert d.shutdown_message == "200 payload: scratch of 1000000000 bytes full"
        assert not scratch.is_mounted(areas[name]) and not os.path.exists(areas[name])
    assert sorted(report.created) == names          # refilled in the same cycle
    for name in names:
        d = dock.dir(name)
        area = scratch.mount_point(dock.state, os.path.basename(d.path))
        assert d.path != old[name].path and scratch.is_mounted(area)
        assert scratch.used_bytes(dock.state, os.path.basename(d.path)) is not None
