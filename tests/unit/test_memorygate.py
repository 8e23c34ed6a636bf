# SPDX-License-Identifier: BSD-2-Clause
"""Admission by memory (vac.cycle.memorygate and the planner with a memory reading): with
memory_overcommit set, a machine is created only if MemAvailable x memory_overcommit covers
its limit plus the limits of the machines created before it in the cycle plus what the
running machines may still take up to their limits (an unknown usage counting the whole
limit); refused, every free slot left says so with a PRESSURE reason for "memory" and the
figures. Off by default. The option's validation, the reading of MemAvailable and of each
machine's memory.current (vac.host.memory, vac.cycle.machinepressure) and the cycle's
warning (vac.cycle.hostmemory)."""
from __future__ import annotations

import dataclasses
import logging
import random
import re

import pytest

from vac import planfile
from vac.cycle import memorygate, planner
from vac.cycle.hostmemory import HostMemory
from vac.cycle.machinepressure import MachinePressureRecorder
from vac.cycle.observe import Observation
from vac.errors import ConfigError
from vac.host import cgroups, memory
from vac.host.machinepressure import MachinePressures
from vac.host.memory import MIB, MemoryReading
from vac.machine.directory import MachineDir, MachineState
from vac.machine.observed import Observed
from vac.machine.slots import make_slots
from vac.space import censusdata
from vac.web.statuspressure import paused_resources

NOW = 1_700_000_000.0
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 4
mb_per_processor = 256
{settings}

[machinetype a]
machine_model = fake
target_share = 1
"""
ON = "memory_overcommit = 1.0"
SLOTS = make_slots("f1.example.com", 4)


@pytest.fixture
def conf(make_config):
    return lambda settings=ON: make_config(CONF.format(settings=settings))


def running(ordinal: int, model: str = "docker", machinetype: str = "a") -> Observed:
    return Observed(slot=SLOTS[ordinal], machinetype=machinetype, model=model,
                    state=MachineState.RUNNING, created=int(NOW) - 500 - ordinal,
                    started=NOW - 500, cpu_seconds=10.0, shutdown_time=int(NOW) + 10_000)


def used(machine: Observed, mib: int):
    return {(machine.name, machine.created): mib * MIB}


def plan(config, reading=None, machines=()):
    taken = {m.slot.ordinal: m for m in machines}
    observed = [taken.get(s.ordinal, Observed(slot=s)) for s in SLOTS]
    census = censusdata.local_census(observed, {}, config.machinetypes, NOW)
    return planner.plan(config, observed, census, load=0.0, now=NOW,
                        daemon_started=NOW - 100_000, rng=random.Random(1), memory=reading)


def test_off_by_default_whatever_the_reading(conf):
    config = conf("")
    assert config.settings.memory_overcommit is None
    result = plan(config, MemoryReading(1 * MIB))
    assert len(result.creates) == 4 and result.memory_stop is None


def test_no_reading_no_stop(conf):
    assert len(plan(conf()).creates) == 4


def test_each_creation_of_the_cycle_counts_its_whole_limit_up_to_the_boundary(conf):
    result = plan(conf(), MemoryReading(512 * MIB))            # exactly two 256 MiB machines
    assert len(result.creates) == 2 and len(result.idle) == 2
    why = result.idle[0].why
    assert why.kind == planfile.PRESSURE and why.resource == "memory"
    assert why.text == ("memory: 512 MiB available x memory_overcommit 1 < 256 MiB for a new "
                        "machine + 512 MiB for the 2 created this cycle")
    assert result.memory_stop == why and result.idle[1].why == why
    assert len(plan(conf(), MemoryReading(511 * MIB)).creates) == 1
    assert plan(conf(), MemoryReading(255 * MIB)).creates == ()


def test_the_stop_reads_back_from_plan_json_as_a_pause_for_memory(conf, tmp_path):
    why = plan(conf(), MemoryReading(255 * MIB)).memory_stop
    path = str(tmp_path / "plan.json")
    planfile.write(path, planfile.PlanRecord(time=NOW, idle={SLOTS[0].name: why}))
    record = planfile.read(path)
    assert record.idle[SLOTS[0].name] == why
    assert paused_resources(record) == {"memory"}    # the status page's and the metrics'


def test_the_overcommit_factor_multiplies_mem_available(conf):
    assert len(plan(conf("memory_overcommit = 2"), MemoryReading(512 * MIB)).creates) == 4
    assert len(plan(conf("memory_overcommit = 1.5"), MemoryReading(512 * MIB)).creates) == 3


def test_running_machines_count_what_they_may_still_take(conf):
    one, two = running(0), running(1)
    usage = {**used(one, 100), **used(two, 56)}                 # 156 + 200 MiB still to take
    fits = plan(conf(), MemoryReading((256 + 356) * MIB, usage), [one, two])
    assert len(fits.creates) == 1 and fits.idle[0].why.text == (
        "memory: 612 MiB available x memory_overcommit 1 < 256 MiB for a new machine + 256 "
        "MiB for the 1 created this cycle + 356 MiB the 2 running may still take")
    short = plan(conf(), MemoryReading((256 + 355) * MIB, usage), [one, two])
    assert short.creates == () and len(short.idle) == 2
    assert [h.name for h in short.heartbeats] == [one.name, two.name]   # still managed


def test_a_machine_above_its_limit_has_no_room_left(conf):
    over = running(0)
    result = plan(conf(), MemoryReading(768 * MIB, used(over, 300)), [over])
    assert len(result.creates) == 3


def test_unknown_usage_counts_the_whole_limit(conf):
    seen, unseen = running(0), running(1)
    result = plan(conf(), MemoryReading((256 + 255) * MIB, used(seen, 256)), [seen, unseen])
    assert result.creates == ()
    assert result.memory_stop.text.endswith(
        "+ 256 MiB the 2 running may still take (1 of them with usage unknown, counted at "
        "their whole limit)")
    # A usage read for the slot's previous machine (another created time) is not this one's.
    stale = {(unseen.name, unseen.created - 1000): 256 * MIB}
    assert plan(conf(), MemoryReading(511 * MIB, {**used(seen, 256), **stale}),
                [seen, unseen]).creates == ()
    assert len(plan(conf(), MemoryReading(512 * MIB, used(seen, 256)), [seen, unseen]).creates) \
        == 1


def test_vms_and_containers_alike(conf):
    vm, container = running(0, "cernvm3"), running(1, "docker")
    usage = {**used(vm, 56), **used(container, 56)}             # 200 + 200 MiB to take
    assert len(plan(conf(), MemoryReading(656 * MIB, usage), [vm, container]).creates) == 1
    assert plan(conf(), MemoryReading(655 * MIB, usage), [vm, container]).creates == ()


def test_the_limit_is_the_machinetypes_per_processor_times_processors(conf):
    config = conf()
    mt = dataclasses.replace(config.machinetypes["a"], mb_per_processor=100)
    big = dataclasses.replace(running(0), processors=3)
    config = dataclasses.replace(config, machinetypes={"a": mt})
    assert memorygate.limit_bytes(mt, 3) == 300 * MIB
    assert memorygate.room(MemoryReading(0, used(big, 120)), big, mt) == (180 * MIB, False)
    # A machine whose machinetype is no longer configured has no known limit: no room.
    gone = running(1, machinetype="gone")
    assert memorygate.room(MemoryReading(0), gone, None) == (0, False)
    assert len(plan(config, MemoryReading(100 * MIB), [gone]).creates) == 1


@pytest.mark.parametrize("value", ["0.5", "0", "-1", "x", "nan"])
def test_bad_values_are_rejected_naming_the_file_line_and_option(make_config, value):
    with pytest.raises(ConfigError) as caught:
        make_config(CONF.format(settings=f"memory_overcommit = {value}"))
    assert re.search(r"vac\.conf:\d+ \[settings\] memory_overcommit: ", str(caught.value))


def test_an_empty_value_is_off(conf):
    assert conf("memory_overcommit =").settings.memory_overcommit is None


# The reading (vac.host.memory, vac.cycle.machinepressure) ----------------------------------

MEMINFO = "MemTotal:        1004000 kB\nMemFree:  100 kB\nMemAvailable:     626688 kB\n"


def test_mem_available_is_read_in_bytes(tmp_path):
    (tmp_path / "meminfo").write_text(MEMINFO)
    assert memory.read_available(str(tmp_path)) == 626688 * 1024
    assert memory.parse_available("MemTotal: 1 kB\n") is None       # before Linux 3.14
    assert memory.read_available(str(tmp_path / "absent")) is None


def _cgroup(tmp_path, path="/vac/m1", current="123456\n"):
    directory = tmp_path / "cg" / path.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    if current is not None:
        (directory / "memory.current").write_text(current)
    return cgroups.Hierarchies(v2=cgroups.Mount("/", str(tmp_path / "cg")))


def test_a_machines_usage_is_its_cgroups_memory_current(tmp_path):
    assert memory.cgroup_usage("/vac/m1", _cgroup(tmp_path)) == 123456


@pytest.mark.parametrize("current", [None, "", "-5\n", "12 kB\n", "1e9\n", "9" * 30])
def test_no_or_a_hostile_memory_current_is_unknown(tmp_path, current):
    assert memory.cgroup_usage("/vac/m1", _cgroup(tmp_path, current=current)) is None


def test_no_cgroup2_mount_or_no_cgroup_is_unknown(tmp_path):
    assert memory.cgroup_usage("/vac/m1", cgroups.Hierarchies()) is None   # cgroup v1
    assert memory.cgroup_usage(None, _cgroup(tmp_path)) is None
    assert memory.cgroup_usage("/../etc", _cgroup(tmp_path)) is None


class _Backend:
    def cgroup_path(self, name, directory):
        return {"f1-00.example.com": "/vac/m1"}.get(name)


class _Pool:
    def for_model(self, model):
        return _Backend()


def test_the_cycle_keeps_each_machines_usage_by_name_and_created_time(tmp_path, paths):
    hierarchies = _cgroup(tmp_path)
    dirs = [MachineDir.create(paths, int(NOW) - 100, "a", n)
            for n in ("f1-00.example.com", "f1-01.example.com")]
    seen = Observation(directories={d.name: d for d in dirs},
                       models={d.name: "docker" for d in dirs})
    recorder = MachinePressureRecorder(MachinePressures(hierarchies))
    recorder.record(_Pool(), [d.name for d in dirs], seen, NOW)
    assert recorder.usage == {("f1-00.example.com", int(NOW) - 100): 123456}
    recorder.record(_Pool(), [], seen, NOW + 60)                # none running: none kept
    assert recorder.usage == {}


# The cycle's side (vac.cycle.hostmemory) ----------------------------------------------------

def test_the_host_is_read_only_while_the_option_is_set(conf):
    asked = []

    def available():
        asked.append(1)
        return 900 * MIB

    host = HostMemory(lambda: {("m", 1): 5}, available)
    assert host.inputs(conf("")) == {"memory": None} and asked == []
    assert host.inputs(conf()) == {"memory": MemoryReading(900 * MIB, {("m", 1): 5})}


def test_no_mem_available_is_no_stop_said_once(conf, caplog):
    host = HostMemory(dict, lambda: None)
    with caplog.at_level(logging.WARNING):
        assert host.inputs(conf()) == {"memory": None}
        assert host.inputs(conf()) == {"memory": None}
    assert len([r for r in caplog.records if "MemAvailable" in r.getMessage()]) == 1
    assert HostMemory.beside(False, dict).inputs(conf()) == {"memory": None}


def test_vacd_warns_once_per_stop_and_says_when_creation_resumes(conf, caplog):
    host = HostMemory(dict, lambda: 300 * MIB)
    config = conf()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            host.kept(plan(config, host.inputs(config)["memory"], [running(0)]))
        host.kept(plan(config, MemoryReading(2000 * MIB), [running(0)]))
    said = [r.getMessage() for r in caplog.records]
    assert len([m for m in said if m.startswith("creation stops for memory: memory: ")]) == 1
    assert len([m for m in said if m.startswith("creation resumes")]) == 1
    assert host.stopped is None
