# SPDX-License-Identifier: BSD-2-Clause
"""Admission by pressure (vac.cycle.gate.pressure_stop and the planner with a PSI reading):
creation pauses above a threshold with a PRESSURE idle reason naming the resource and its
figure, resumes only at 3/4 of the threshold, adds to the load average gate, and a host without
PSI plans as before. The thresholds' defaults and validation; the reason in plan.json."""
from __future__ import annotations

import random
from typing import Dict, Optional

import pytest

from vac import planfile
from vac.cycle import gate, planner
from vac.errors import ConfigError
from vac.host.pressure import Line, Reading, Stall
from vac.machine.observed import Observed
from vac.machine.slots import make_slots
from vac.space import censusdata

NOW = 1_700_000_000.0
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 4
{settings}

[machinetype a]
machine_model = fake
target_share = 1
"""


def reading(cpu: float = 0.0, memory: float = 0.0, io_full: float = 0.0,
            io_some: Optional[float] = None, cpu_full: bool = True) -> Reading:
    """A host reading with these avg10 figures (per cent)."""
    def line(avg10: float) -> Line:
        return Line(avg10, avg10, avg10, 1000.0)
    stalls: Dict[str, Stall] = {
        "cpu": Stall(line(cpu), line(0.0) if cpu_full else None),
        "memory": Stall(line(memory), line(memory / 2)),
        "io": Stall(line(io_full if io_some is None else io_some), line(io_full)),
    }
    return Reading(NOW, stalls)


@pytest.fixture
def conf(make_config):
    return lambda settings="": make_config(CONF.format(settings=settings))


def plan(config, pressure=None, paused=frozenset(), load=0.0):
    observed = [Observed(slot=s) for s in make_slots("f1.example.com", 4)]
    census = censusdata.local_census(observed, {}, config.machinetypes, NOW)
    return planner.plan(config, observed, census, load=load, now=NOW,
                        daemon_started=NOW - 100_000, rng=random.Random(1),
                        pressure=pressure, pressure_paused=paused)


def test_defaults_gate_memory_and_io_not_cpu(conf):
    settings = conf().settings
    assert (settings.pressure_cpu_some, settings.pressure_memory_some,
            settings.pressure_io_full) == (None, 20.0, 40.0)
    # A host busy on every processor (cpu some 95%) with no memory or I/O stall is healthy.
    assert gate.pressure_stop(settings, reading(cpu=95.0, memory=19.9, io_full=40.0)) == \
        (None, frozenset())


def test_memory_pressure_above_its_threshold_pauses_creation(conf):
    result = plan(conf(), reading(memory=31.5))
    assert result.creates == ()
    assert result.pressure_paused == {"memory"}
    reasons = {i.why for i in result.idle}
    assert len(reasons) == 1
    why = reasons.pop()
    assert why.kind == planfile.PRESSURE and why.resource == "memory" and why.value == 31.5
    assert why.text == "memory pressure: some avg10 31.50% > pressure_memory_some 20%"
    assert len(result.idle) == 4


def test_each_resource_over_its_threshold_is_named(conf):
    settings = conf("pressure_cpu_some = 80").settings
    why, paused = gate.pressure_stop(settings, reading(cpu=90.0, memory=25.0, io_full=50.0))
    assert paused == {"cpu", "memory", "io"}
    assert [(p.resource, p.value) for p in why.parts] == \
        [("cpu", 90.0), ("memory", 25.0), ("io", 50.0)]
    assert "io pressure: full avg10 50.00% > pressure_io_full 40%" in why.text


def test_io_is_judged_on_its_full_line(conf):
    settings = conf().settings
    assert gate.pressure_stop(settings, reading(io_some=90.0, io_full=10.0))[0] is None
    assert gate.pressure_stop(settings, reading(io_some=90.0, io_full=45.0))[1] == {"io"}


def test_a_synthetic_trace_pauses_and_resumes_with_hysteresis(conf):
    """memory some avg10 over successive cycles, threshold 20: pause above 20, resume only at
    15 or below; the paused resources go from one plan to the next, as the factory keeps them."""
    config = conf()
    trace = [5.0, 19.0, 22.0, 18.0, 16.0, 15.0, 12.0, 21.0, 14.0]
    paused: frozenset = frozenset()
    created = []
    for value in trace:
        result = plan(config, reading(memory=value), paused)
        paused = result.pressure_paused
        created.append(len(result.creates))
    assert created == [4, 4, 0, 0, 0, 4, 4, 0, 4]
    held = plan(config, reading(memory=16.0), frozenset({"memory"}))
    assert held.idle[0].why.text == \
        "memory pressure: some avg10 16.00% not yet down to 15% (pressure_memory_some 20% x 0.75)"


def test_no_psi_plans_as_before(conf):
    config = conf()
    before = plan(config)
    assert len(before.creates) == 4 and before.pressure_paused == frozenset()
    # A pause left from before (PSI went away): no reading, no pause.
    assert len(plan(config, None, frozenset({"memory"})).creates) == 4


def test_a_threshold_left_empty_is_off(conf):
    settings = conf("pressure_memory_some =").settings
    assert settings.pressure_memory_some is None
    assert gate.pressure_stop(settings, reading(memory=99.0)) == (None, frozenset())


def test_a_missing_line_is_no_figure(conf):
    settings = conf("pressure_cpu_some = 10").settings
    missing = Reading(NOW, {"cpu": Stall(Line(50, 50, 50, 1.0))})
    assert gate.pressure_stop(settings, missing)[0].resource == "cpu"
    settings = conf().settings
    assert gate.pressure_stop(settings, Reading(NOW, {}))[0] is None


def test_it_adds_to_the_load_average_gate(conf):
    config = conf()
    overloaded = plan(config, reading(), load=100.0)
    assert overloaded.creates == () and overloaded.idle[0].why.kind == planfile.OVERLOAD
    # Both over: the load gate is named first (the original's order), the pause still kept.
    both = plan(config, reading(memory=50.0), load=100.0)
    assert both.idle[0].why.kind == planfile.OVERLOAD and both.pressure_paused == {"memory"}


def test_a_rejected_configuration_is_named_before_pressure(conf):
    config = conf()
    blocked = planfile.IdleReason(planfile.CONFIG_REJECTED, "configuration rejected")
    observed = [Observed(slot=s) for s in make_slots("f1.example.com", 4)]
    result = planner.plan(config, observed, {}, load=0.0, now=NOW, daemon_started=NOW,
                          rng=random.Random(1), blocked=blocked,
                          pressure=reading(memory=50.0))
    assert result.idle[0].why.kind == planfile.CONFIG_REJECTED


@pytest.mark.parametrize("value", ["0", "-5", "100.5", "nan"])
def test_a_threshold_out_of_range_is_refused(make_config, value):
    with pytest.raises(ConfigError) as caught:
        make_config(CONF.format(settings=f"pressure_io_full = {value}"))
    assert "pressure_io_full" in str(caught.value)


def test_the_pressure_reason_in_plan_json(tmp_path):
    why = planfile.IdleReason(planfile.PRESSURE, "memory pressure: ...", resource="memory",
                              value=31.5)
    other = planfile.IdleReason(planfile.OVERLOAD, "overload: ...")
    path = str(tmp_path / "plan.json")
    planfile.write(path, planfile.PlanRecord(time=NOW, idle={"s1": why, "s2": other}))
    back = planfile.read(path)
    assert back.idle["s1"] == why and back.idle["s2"] == other
    assert "resource" not in other.to_json() and "value" not in other.to_json()
    assert why.to_json()["resource"] == "memory" and why.to_json()["value"] == 31.5
