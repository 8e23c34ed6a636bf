# SPDX-License-Identifier: BSD-2-Clause
"""vac.cycle.hostpressure: the host's reading for the planner, the pause kept between plans,
a host without PSI said once (creation then gated by the load average alone), and a factory on
a synthetic load average reading nothing of the host; the factory pausing and resuming on a
synthetic trace."""
from __future__ import annotations

import logging

from vac import planfile
from vac.cycle import planner
from vac.cycle.hostpressure import HostPressure
from vac.cycle.shedding import ShedState
from vac.host.pressure import Line, NoPressure, Reading, Stall


def _reading(memory: float, now: float = 0.0) -> Reading:
    line = Line(memory, memory, memory, 1.0)
    return Reading(now, {"memory": Stall(line, line), "io": Stall(Line(0, 0, 0, 0),
                                                                  Line(0, 0, 0, 0))})


def test_no_psi_is_said_once_and_gives_no_reading(caplog):
    def read(now):
        raise NoPressure("/proc/pressure/cpu does not exist")
    host = HostPressure(read)
    with caplog.at_level(logging.WARNING):
        assert host.read(1.0) is None and host.read(2.0) is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["no host pressure (PSI): /proc/pressure/cpu does not exist; creation is "
                     "gated by the load average alone (overload_per_processor)"]
    assert host.inputs(3.0) == {"pressure": None, "pressure_paused": frozenset(),
                                "shed_state": ShedState()}


def test_an_unreadable_file_falls_back_and_recovers(caplog):
    results = [ValueError("/proc/pressure/io line 1: unexpected 'x'"), _reading(5.0)]

    def read(now):
        result = results.pop(0)
        if isinstance(result, Exception):
            raise result
        return result
    host = HostPressure(read)
    with caplog.at_level(logging.INFO):
        assert host.read(1.0) is None
        assert host.problem.startswith("/proc/pressure/io")
        assert host.read(2.0).stalls["memory"].some.avg10 == 5.0
    assert host.problem is None
    assert "readable again" in caplog.records[-1].getMessage()


def test_beside_a_synthetic_load_nothing_is_read(caplog):
    host = HostPressure.beside(False)
    with caplog.at_level(logging.WARNING):
        assert host.read(1.0) is None
    assert caplog.records == []


def test_the_factory_pauses_on_pressure_and_resumes(make_factory):
    """A factory on the fake backend, its host pressure a synthetic trace (memory some avg10,
    threshold 20): the slots stay empty with the pressure reason, and fill once it is down."""
    factory, _, clock = make_factory()
    trace = [30.0, 16.0, 10.0]
    factory.pressure = HostPressure(lambda now: _reading(trace.pop(0), now))
    factory.run_cycle()
    record = planfile.read(factory.config.settings.paths.plan)
    slot_names = sorted(record.idle)
    assert slot_names and all(r.kind == planfile.PRESSURE and r.resource == "memory"
                              for r in record.idle.values())
    assert factory.pressure.paused == {"memory"}
    clock.now += 60
    factory.run_cycle()   # 16 > 15: still paused (hysteresis)
    record = planfile.read(factory.config.settings.paths.plan)
    assert sorted(record.idle) == slot_names
    clock.now += 60
    report = factory.run_cycle()
    assert report.created and factory.pressure.paused == frozenset()


def test_a_shed_that_was_not_carried_out_is_not_kept():
    """A refill keeps only its own slots' destroys: a shed it decided elsewhere is dropped,
    so the next cycle decides it again rather than waiting a grace."""
    host = HostPressure.beside(False)
    decided = ShedState(above_since=5.0, value=30.0, last_shed=5.0, last_machine="m2",
                        sheds=1)
    host.kept(planner.Plan(shed_state=decided))
    assert host.shed == ShedState()
    host.kept(planner.Plan(shed_state=decided, destroys=(planner.Destroy("m2", "100 x", "x"),)))
    assert host.shed == decided
    later = ShedState(above_since=5.0, value=31.0, last_shed=5.0, last_machine="m2", sheds=1)
    host.kept(planner.Plan(shed_state=later))
    assert host.shed == later


def test_the_hosts_pressure_in_plan_json_and_vac_slots(make_factory):
    from vac import slotview
    factory, _, clock = make_factory()
    factory.pressure = HostPressure(lambda now: _reading(3.0, now))
    factory.run_cycle()
    paths = factory.config.settings.paths
    record = planfile.read(paths.plan)
    assert record.pressure["memory"]["some"]["avg10"] == 3.0
    assert record.pressure["time"] == clock.now
    assert slotview.cycle_summary(paths, record)["pressure"] == record.pressure
    factory.pressure = HostPressure.beside(False)
    factory.run_cycle()
    record = planfile.read(paths.plan)
    assert record.pressure is None and "pressure" not in slotview.cycle_summary(paths, record)


def test_a_hostile_pressure_in_plan_json_is_cleaned(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text('{"time": 1, "pressure": {"time": "x", "memory": {"some": '
                    '{"avg10": 1e999, "avg60": 2, "evil": 3}, "weird": {}}, "disk": {}}}')
    record = planfile.read(str(path))
    assert record.pressure == {"time": None, "interval": None,
                               "memory": {"some": {"avg10": None, "avg60": 2.0}}}
