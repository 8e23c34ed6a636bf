# SPDX-License-Identifier: BSD-2-Clause
"""Opportunistic mode's measurement: /proc/stat's busy time, the load from outside
the machines per sample, and whole cycles on the fake backend with a fake host whose busy time
is the owner's plus the machines': the machines' own CPU is never the owner's, the youngest
yields with its coded message, creation pauses and resumes, and the grace survives a restart
of vacd (the state is in yield.json)."""
from __future__ import annotations

import json
import os

import pytest
from fakeclock import Clock
from fakefactory import factory_over

from vac import planfile
from vac.backends.fake import FakeBackend
from vac.config import load
from vac.cycle import ownerload
from vac.cycle.factory import Factory
from vac.cycle.ownerload import OwnerLoad, Reading
from vac.host import hostcpu
from vac.machine.directory import MachineDir, MachineState
from vac.machine.slots import make_slots

STAT = """cpu  1000 20 300 90000 400 5 6 700 800 9
cpu0 500 10 150 45000 200 3 3 350 400 5
cpu1 500 10 150 45000 200 2 3 350 400 4
intr 12345
ctxt 678
"""

CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 3
overload_per_processor = 100
max_creations_per_cycle = 1
cycle_seconds = 10
{settings}

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
fizzle_seconds = 600
backoff_seconds = 1000
fake_run_seconds = 100000
fake_cpu_per_second = 1.0
"""
YIELD = """yield_load_per_processor = 0.5
yield_grace_seconds = 100
yield_pause_seconds = 300"""
SLOTS = [s.name for s in make_slots("f1.example.com", 3)]


def test_busy_is_user_nice_system_irq_softirq_and_processors_are_counted():
    cpu = hostcpu.parse_stat(STAT, 100.0)
    assert cpu.busy_seconds == pytest.approx((1000 + 20 + 300 + 5 + 6) / 100.0)
    assert cpu.processors == 2
    with pytest.raises(ValueError):
        hostcpu.parse_stat("intr 1\n", 100.0)
    with pytest.raises(ValueError):
        hostcpu.parse_stat("cpu 1 2 x 4 5 6 7\n", 100.0)
    real = hostcpu.read()
    assert real.busy_seconds > 0 and real.processors >= 1


def reading(time, busy, machines, processors=2, unmeasured=()):
    return Reading(time, busy, processors, dict(machines), tuple(unmeasured))


def test_a_sample_subtracts_the_machines_cpu_over_the_same_interval():
    before = reading(100, 1000, {"/m/a": 50, "/m/b": 10})
    now = reading(110, 1016, {"/m/a": 58, "/m/c": 3})   # b ended, c started
    sample = ownerload.sample(before, now, ended={"/m/b": 12.0}.get)
    # machines: a 8 + c 3 + b's last 2 = 13 of 16 busy seconds, over 10 s x 2 processors
    assert sample.machines == pytest.approx(13 / 20)
    assert sample.owner == pytest.approx(3 / 20)
    assert (sample.start, sample.end, sample.problem) == (100, 110, "")
    gone = ownerload.sample(before, now, ended=lambda path: None)
    assert gone.owner == pytest.approx(5 / 20)           # b's last CPU seconds not known


def test_samples_that_cannot_be_measured_say_why():
    before = reading(100, 1000, {})
    assert ownerload.sample(before, reading(100, 1010, {})).problem == "the clock went back"
    rebooted = ownerload.sample(before, reading(110, 10, {}))
    assert rebooted.owner is None and "went back" in rebooted.problem
    blind = ownerload.sample(before, reading(110, 1010, {}, unmeasured=["f1-01"]))
    assert blind.owner is None and "f1-01" in blind.problem
    assert ownerload.sample(reading(100, 1000, {}, unmeasured=["x"]),
                            reading(110, 1010, {})).owner is None
    assert ownerload.sample(before, reading(110, 1001, {"/m/a": 50})).owner == 0.0


def test_a_reading_round_trips_and_garbage_is_no_reading():
    r = reading(1.5, 2.5, {"/m/a": 3.0}, 4, ["s"])
    assert Reading.from_json(json.loads(json.dumps(r.to_json()))) == r
    assert Reading.from_json({"time": "x"}) is None and Reading.from_json(None) is None


class FakeHost:
    """/proc/stat of a 3-processor host: the owner's busy seconds plus the machines'."""

    def __init__(self, backend: FakeBackend, clock: Clock):
        self.backend, self.clock = backend, clock
        self.busy = 5000.0
        self.owner = 0.0           # processors' worth the owner keeps busy
        self.processors = 3

    def advance(self, seconds: float) -> None:
        running = sum(self.backend._status(name, m).state == MachineState.RUNNING
                      for name, m in self.backend._load().items())
        self.busy += (self.owner + running) * seconds    # each machine burns 1 processor
        self.clock.now += seconds

    def __call__(self) -> hostcpu.HostCpu:
        return hostcpu.HostCpu(self.busy, self.processors)


class World:
    def __init__(self, tmp_path, host_facts, settings: str):
        self.tmp_path, self.host_facts = tmp_path, host_facts
        self.state = str(tmp_path / "state")
        template = tmp_path / "user_data"
        template.write_text("#!/bin/sh\n")
        self.conf = tmp_path / "vac.conf"
        self.conf.write_text(CONF.format(state=self.state, settings=settings,
                                         user_data=template))
        self.clock = Clock()
        self.backend = FakeBackend(self.read().settings, clock=self.clock)
        self.host = FakeHost(self.backend, self.clock)
        self.factory = self.new_factory()

    def read(self):
        return load.build(load.read_raw([str(self.conf)]), self.host_facts)

    def new_factory(self) -> Factory:
        """A vacd (re)started on the same state directory."""
        return factory_over(self.read, self.backend, self.clock, owner_load=OwnerLoad(self.host))

    def cycles(self, count: int, seconds: float = 10.0):
        reports = []
        for _ in range(count):
            reports.append(self.factory.run_cycle())
            self.host.advance(seconds)
        return reports

    def kept(self) -> dict:
        with open(self.read().settings.paths.yield_state) as f:
            return json.load(f)

    def plan_idle(self) -> dict:
        return planfile.read(self.read().settings.paths.plan).idle_texts()


@pytest.fixture
def world(tmp_path, host):
    return lambda settings=YIELD: World(tmp_path, host, settings)


def test_the_machines_own_cpu_is_not_the_owners(world):
    w = world()
    reports = w.cycles(20)                     # 3 machines, each burning a whole processor
    assert sum(len(r.created) for r in reports) == 3
    assert not any(r.destroyed for r in reports)
    state = w.kept()["state"]
    assert state["owner"] == pytest.approx(0.0) and state["above_since"] is None
    assert w.kept()["reading"]["machines"]    # each machine's CPU seconds, by directory


def test_off_by_default_no_file(world):
    w = world(settings="")
    w.host.owner = 3.0
    reports = w.cycles(30)
    assert not any(r.destroyed for r in reports)
    assert not os.path.exists(w.read().settings.paths.yield_state)


def test_owner_load_yields_the_youngest_pauses_and_resumes(world):
    w = world()
    w.cycles(5)                                # one machine per cycle: slot 2 is youngest
    w.host.owner = 2.0                         # 2 of 3 processors: 0.67 > 0.5
    start = w.clock.now
    reports = w.cycles(12)
    yielded = [(i, r.destroyed) for i, r in enumerate(reports) if r.destroyed]
    assert yielded[0][1] == [SLOTS[2]]
    # above since the first high sample began (start); grace 100 -> the cycle at start + 100
    assert start + 10 * yielded[0][0] == start + 100
    old = [d for d in _machine_dirs(w) if d.name == SLOTS[2] and d.finished is not None]
    assert len(old) == 1
    assert old[0].shutdown_message.startswith("100 Vac yields to the host's owner: load "
                                              "outside the machines 0.67 per processor")
    idle = w.plan_idle()
    assert idle[SLOTS[2]].startswith("yielding to the host's owner: creation paused until")
    w.host.owner = 0.0                         # the owner is done
    paused_until = w.kept()["state"]["paused_until"]
    reports = w.cycles(40)
    created = [(w.clock.now, r.created) for r in reports if r.created]
    assert created and created[0][1] == [SLOTS[2]]
    assert all(r.destroyed == [] for r in reports)
    assert created[0][0] - 10 >= paused_until  # not before the pause ended


def test_the_grace_survives_a_restart_of_vacd(world):
    w = world()
    w.cycles(5)
    w.host.owner = 2.0
    start = w.clock.now
    first = w.cycles(6)                        # 60 s of the 100 s grace
    assert not any(r.destroyed for r in first)
    assert w.kept()["state"]["above_since"] == start
    w.factory = w.new_factory()                # vacd restarted: a new Factory, same state
    second = w.cycles(6)
    yields = [w.clock.now - 10 * (len(second) - i) for i, r in enumerate(second) if r.destroyed]
    assert yields == [start + 100]             # as if vacd had never stopped


def test_a_backend_that_cannot_be_asked_restarts_the_grace(world):
    w = world()
    w.cycles(5)
    w.host.owner = 2.0
    w.cycles(5)
    assert w.kept()["state"]["above_since"] is not None
    w.backend.available = False
    reports = w.cycles(15)
    assert not any(r.destroyed for r in reports)
    assert w.kept()["state"]["above_since"] is None and w.kept()["state"]["owner"] is None


def _machine_dirs(w):
    top = w.read().settings.paths.machines
    return [MachineDir(os.path.join(top, n)) for n in sorted(os.listdir(top))]


def test_a_refill_during_the_pause_finishes_but_creates_nothing(world):
    w = world()
    w.cycles(5)
    w.host.owner = 2.0
    reports = w.cycles(12)
    assert any(r.destroyed == [SLOTS[2]] for r in reports)
    w.host.owner = 0.0
    machines = w.backend._load()                 # slot 0's machine ends by itself
    machines[SLOTS[0]]["run_seconds"] = w.clock.now - machines[SLOTS[0]]["started"]
    machines[SLOTS[0]]["message"] = "200 Success"
    w.backend._save(machines)
    report = w.factory.refill([SLOTS[0]])
    assert report.finished == [SLOTS[0]] and report.created == []
    assert w.kept()["state"]["paused_until"] > w.clock.now
