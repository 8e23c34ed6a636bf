# SPDX-License-Identifier: BSD-2-Clause
"""A container's joboutputs/ capped (issue 29), through vacd's cycle on the real Docker engine:
a machine with a scratch gets a joboutputs of joboutputs_machine_mb of its own; a payload that
tries to fill it gets ENOSPC there, and nothing else happens to the state directory; one that
leaves it full still gets Vac's own shutdown_message written at the end (through the blocks
reserved for vacd); the cycle finishes both without errors and their files are back in the plain
directory."""
from __future__ import annotations

import os

import pytest
import scratchpool
from docker_engine import engine_ready
from dockerfactory import DockerFactory, all_exited
from waiting import wait_until

from vac.machine import joboutputcap, scratch

pytestmark = [pytest.mark.docker]
MIB = 1024 * 1024

FILL = r"""#!/bin/sh
cd "$JOBOUTPUTS"
dd if=/dev/zero of=big bs=1M count=200 2> dd.err
size=$(wc -c < big)
grep -q "No space left on device" dd.err || exit 0
case "$(hostname)" in
  *-00.*) rm big; echo "200 payload: joboutputs full at $size bytes" > shutdown_message ;;
esac
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
    scratchpool.remove_pool(world.state)


def test_a_payload_filling_joboutputs_is_capped_and_the_factory_goes_on(dock):
    dock.write(FILL, slots=2, extra_mt="disk_gb_per_processor = 1")
    names = dock.slots(2)
    free_before = os.statvfs(dock.state).f_bavail * os.statvfs(dock.state).f_frsize
    first = dock.cycle()
    assert sorted(first.created) == names and first.errors == []
    old = {n: dock.dir(n) for n in names}
    for d in old.values():
        assert scratch.is_mounted(d.file("joboutputs"))
    assert wait_until(lambda: all_exited(dock, 2)), dock.containers()
    free_after = os.statvfs(dock.state).f_bavail * os.statvfs(dock.state).f_frsize
    assert free_before - free_after < 100 * MIB      # not the 400 MB the payloads asked for
    report = dock.cycle()
    assert sorted(report.finished) == names and report.errors == []
    said = old[names[0]].shutdown_message
    assert said.startswith("200 payload: joboutputs full at ")
    assert int(said.split()[-2]) < 16 * MIB
    full = old[names[1]]     # its own joboutputs full: Vac's message written all the same
    assert full.shutdown_message.startswith("300 Vac detects fizzle")
    assert os.path.getsize(full.file("joboutputs/big")) < 16 * MIB      # kept, copied back
    for d in old.values():
        assert not scratch.is_mounted(d.file("joboutputs"))
        assert not os.path.exists(d.file(joboutputcap.SAVED))
        assert os.path.isfile(d.file("joboutputs/dd.err"))
    # The fizzle backs the machinetype off: the slots wait for that, not for the disk.
    assert all(r.startswith("backoff of dock") for r in report.idle.values()), report.idle
