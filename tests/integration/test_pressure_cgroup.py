# SPDX-License-Identifier: BSD-2-Clause
"""vac.host.pressure on a real cgroup v2 cgroup: the kernel's cpu.pressure of a cgroup whose
processes outnumber the processors shows stall time that grows, and a cgroup whose
cgroup.pressure is 0 (the kernel hides its pressure files) reads as NoPressure, not as a broken
file.

Needs root and a cgroup2 mount (the unified /sys/fs/cgroup of EL9 and the v2 guest, or the
/sys/fs/cgroup/unified of a hybrid host like the development machines); skips elsewhere.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest
from waiting import GENEROUS, wait_until

from vac.host import cgroups, pressure

pytestmark = [pytest.mark.root]

BURNERS = (os.cpu_count() or 1) + 2   # more runnable tasks than processors: some stall


@pytest.fixture
def cgroup_dir():
    if os.geteuid() != 0:
        pytest.skip("needs root to make a cgroup")
    unified = cgroups.read_hierarchies().v2
    if unified is None or not os.path.exists(os.path.join(unified.point, "cpu.pressure")):
        pytest.skip("no cgroup2 mount with pressure files on this host")
    path = os.path.join(unified.point, f"vac-test-pressure-{uuid.uuid4().hex[:8]}")
    os.mkdir(path)
    procs = []
    yield path, procs
    for proc in procs:
        proc.kill()
        proc.wait()
    assert wait_until(lambda: _empty(path), timeout=GENEROUS)
    os.rmdir(path)


def _empty(path: str) -> bool:
    with open(os.path.join(path, "cgroup.procs"), encoding="ascii") as f:
        return not f.read().strip()


def test_a_cgroups_cpu_pressure_grows_while_its_processes_wait(cgroup_dir):
    path, procs = cgroup_dir
    if cgroups.read_hierarchies().v2.root == "/":   # found from its cgroup path, as a machine's
        assert pressure.cgroup_dir("/" + os.path.basename(path)) == path
    gauge = pressure.cgroup_gauge(path)
    first = gauge.read(0.0)
    assert set(first.stalls) == {"cpu", "memory", "io"}
    for _ in range(BURNERS):
        proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        procs.append(proc)
        with open(os.path.join(path, "cgroup.procs"), "w", encoding="ascii") as f:
            f.write(str(proc.pid))
    stalled = []

    def grown() -> bool:
        reading = gauge.read(1.0 + len(stalled))
        stalled.append(reading)
        return reading.stalls["cpu"].some.total > first.stalls["cpu"].some.total
    assert wait_until(grown, step=0.5)
    assert any(r.since_last.get(("cpu", "some"), 0.0) > 0.0 for r in stalled)


def test_a_cgroup_with_pressure_off_is_no_pressure(cgroup_dir):
    path, _ = cgroup_dir
    knob = os.path.join(path, "cgroup.pressure")
    if not os.path.exists(knob):
        pytest.skip("this kernel has no cgroup.pressure (before 6.1)")
    with open(knob, "w", encoding="ascii") as f:
        f.write("0")
    with pytest.raises(pressure.NoPressure, match="cgroup.pressure is 0"):
        pressure.read(pressure.cgroup_files(path))
