# SPDX-License-Identifier: BSD-2-Clause
"""`started` and `heartbeat` name one second three ways (vac.machine.stamped): the time
written in the file, its mtime (what this project reads) and its ctime (what the original
reads), also when a write crosses a second boundary; an injected clock is written as it is."""
from __future__ import annotations

import os
import random
import time
import types

import pytest

from vac import fsutil
from vac.backends.fake import FakeBackend
from vac.config import load
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory
from vac.machine import heartbeat, stamped
from vac.machine.directory import MachineDir

NOW = 1_700_000_000.0


@pytest.fixture
def directory(tmp_path):
    path = tmp_path / "1700000000_a_f1-00.example.com"
    os.makedirs(path)
    return MachineDir(str(path))


def seconds(path: str):
    """(the first word as a number, int(mtime), int(ctime)) of a file."""
    st = os.lstat(path)
    with open(path) as f:
        first = f.read().split()[0]
    return float(first), int(st.st_mtime), int(st.st_ctime)


def original_cpu_percent(path: str, previous_cpu: int, previous_ctime: int) -> float:
    """The CPU % as the original computes it from the heartbeat's ctimes."""
    with open(path) as f:
        cpu = int(f.readline().split(" ")[0])
    return 100.0 * (cpu - previous_cpu) / (int(os.lstat(path).st_ctime) - previous_ctime)


@pytest.fixture
def late_clock(monkeypatch):
    """The wall clock as stamped reads it, five seconds behind (as a time taken before a long
    engine call, or a write that lands after a second boundary); the writes are counted."""
    writes = []

    def reading():
        return time.time() - 5.0
    real_write = fsutil.atomic_write

    def counted(*args, **kw):
        writes.append(args[0])
        return real_write(*args, **kw)
    monkeypatch.setattr(stamped, "time", types.SimpleNamespace(time=reading))
    monkeypatch.setattr(fsutil, "atomic_write", counted)
    return writes


def test_a_write_that_lands_in_another_second_is_written_again_naming_it(directory,
                                                                        late_clock):
    named = directory.write_started()
    number, mtime, ctime = seconds(directory.file("started"))
    assert number == mtime == ctime == named == directory.started
    assert len(late_clock) >= 2              # the first, naming a second long gone, redone


def test_a_heartbeat_that_lands_late_agrees_and_its_percentage_is_the_originals(directory,
                                                                              late_clock):
    first = directory.write_first_heartbeat()
    deadline = time.monotonic() + 30
    while time.time() < first + 1.1 and time.monotonic() < deadline:
        time.sleep(0.05)    # the next heartbeat in a later second, also by the kernel's
                            # coarse clock that stamps ctimes (a tick behind time.time)
    del late_clock[:]
    named = directory.write_heartbeat(37.9)
    cpu, mtime, ctime = seconds(directory.file(heartbeat.NAME))
    assert mtime == ctime == named == directory.heartbeat_time and cpu == 37
    ours = directory.heartbeat_values()[1]
    assert ours == round(original_cpu_percent(directory.file(heartbeat.NAME), 0, int(first)), 1)
    assert len(late_clock) >= 2


def test_every_write_across_a_second_boundary_agrees(directory):
    """Real clock, no fakes: writes from before a second boundary until after it. Whichever
    of them crosses it (none need to on a fast machine), each names its ctime's second."""
    deadline = time.monotonic() + 30
    while time.time() % 1.0 < 0.9 and time.monotonic() < deadline:
        time.sleep(0.01)                     # wait for the last tenth of a second
    boundary = int(time.time()) + 1
    written = 0
    while (time.time() < boundary + 0.1 or written < 2) and time.monotonic() < deadline:
        named = directory.write_started()
        number, mtime, ctime = seconds(directory.file("started"))
        assert number == mtime == ctime == named
        named = directory.write_heartbeat(float(written))
        _, mtime, ctime = seconds(directory.file(heartbeat.NAME))
        assert mtime == ctime == named
        written += 1
    assert time.time() >= boundary


def test_an_injected_clock_is_written_as_it_is(directory):
    assert directory.write_started(NOW) == NOW
    assert directory.read("started") == str(int(NOW)) and directory.started == NOW
    directory.write_first_heartbeat(NOW)
    directory.write_heartbeat(50.7, NOW + 100)
    assert directory.read(heartbeat.NAME) == "50 50.0\n"
    assert directory.heartbeat_time == NOW + 100


def test_now_for_tells_the_wall_clock_from_an_injected_one():
    assert stamped.now_for(time.time) is None
    assert stamped.now_for(lambda: NOW) == NOW


CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
enable_fake_backend = true

[machinetype alpha]
machine_model = fake
target_share = 1
max_wallclock_seconds = 5000
fake_run_seconds = 300
"""


class SlowEngine(FakeBackend):
    """The fake engine, whose create returns only once the second it began in has ended
    (by a margin: the kernel's coarse clock that stamps ctimes is a tick behind time.time)."""

    began = []

    def create(self, spec):
        began = time.time()
        self.began.append(began)
        name = super().create(spec)
        deadline = time.monotonic() + 30
        while time.time() < int(began) + 1.05 and time.monotonic() < deadline:
            time.sleep(0.02)
        return name


def test_the_factory_stamps_started_after_the_engine_call_and_every_file_agrees(tmp_path,
                                                                              paths, host):
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=paths.state_dir))

    def config():
        return load.build(load.read_raw([str(conf)]), host)
    settings = config().settings
    SlowEngine.began = []
    pool = BackendPool(settings, {"fake": SlowEngine(settings)})
    factory = Factory(config, pool, loadavg=lambda: (0.0, 0.0, 0.0), rng=random.Random(1))
    factory.run_cycle()
    factory.run_cycle()   # the heartbeats of the running machines
    machines = [MachineDir(os.path.join(paths.machines, e)) for e in os.listdir(paths.machines)]
    assert len(machines) == host.processors == len(SlowEngine.began)
    for d in machines:
        number, mtime, ctime = seconds(d.file("started"))
        assert number == mtime == ctime and number > d.created   # after the engine call
        _, mtime, ctime = seconds(d.file(heartbeat.NAME))
        assert mtime == ctime == d.heartbeat_time
    _, mtime, ctime = seconds(paths.factory_heartbeat)
    assert mtime == ctime


def test_the_metadata_servers_heartbeats_agree_too(tmp_path, late_clock):
    from vac.backends.libvirt.heartbeat import MJF, ServiceHeartbeat
    ServiceHeartbeat(str(tmp_path), MJF).beat()
    number, mtime, ctime = seconds(str(tmp_path / MJF))
    assert number == mtime == ctime and len(late_clock) >= 2
