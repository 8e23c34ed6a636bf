# SPDX-License-Identifier: BSD-2-Clause
"""Shedding before the OOM killer (vac.cycle.shedding and the planner): under memory full
pressure above shed_memory_full for shed_grace_seconds the youngest machine is destroyed with a
code 100 message of its own (no abort, no backoff), one per grace, creation stopped meanwhile;
off by default; no reading, no shedding. The factory carries it out on a synthetic trace."""
from __future__ import annotations

import random

import pytest

from vac import planfile
from vac.cycle import planner, shedding
from vac.cycle.hostpressure import HostPressure
from vac.cycle.shedding import ShedState
from vac.errors import ConfigError
from vac.host.pressure import Line, Reading, Stall
from vac.machine import outcome
from vac.machine.directory import MachineDir, MachineState
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
SHEDDING = "shed_memory_full = 10\nshed_grace_seconds = 120\npressure_memory_some ="


def memory(full: float, now: float = NOW) -> Reading:
    return Reading(now, {"memory": Stall(Line(full, full, full, 1.0),
                                         Line(full, full, full, 1.0))})


def machines():
    """Four running machines, slot 2's the youngest."""
    started = {0: 1000, 1: 3000, 2: 5000, 3: 2000}
    return [Observed(slot=s, machinetype="a", model="fake", state=MachineState.RUNNING,
                     created=int(NOW - 9000), started=NOW - 9000 + started[s.ordinal],
                     processors=1, shutdown_time=int(NOW + 80_000), last_heartbeat=NOW - 60)
            for s in make_slots("f1.example.com", 4)]


@pytest.fixture
def conf(make_config):
    return lambda settings=SHEDDING: make_config(CONF.format(settings=settings))


def plan(config, reading, state=None, now=NOW, observed=None):
    observed = observed if observed is not None else machines()
    census = censusdata.local_census(observed, {}, config.machinetypes, now)
    return planner.plan(config, observed, census, load=0.0, now=now, daemon_started=NOW - 1e5,
                        rng=random.Random(1), pressure=reading, shed_state=state)


def test_off_by_default(conf):
    config = conf("")
    assert config.settings.shed_memory_full is None
    assert config.settings.shed_grace_seconds == 60.0
    result = plan(config, memory(90.0))
    assert result.destroys == () and result.shed_state == ShedState(value=90.0)


def test_a_synthetic_trace_sheds_the_youngest_one_grace_at_a_time(conf):
    config = conf()
    trace = [(0, 5.0), (60, 12.0), (120, 15.0), (180, 30.0), (240, 30.0), (300, 25.0),
             (360, 8.0), (420, 20.0)]
    observed = machines()
    state, shed = None, []
    for offset, value in trace:
        result = plan(config, memory(value, NOW + offset), state, NOW + offset, observed)
        state = result.shed_state
        gone = {d.name for d in result.destroys}
        shed.append(sorted(gone))
        observed = [Observed(slot=o.slot) if o.slot.name in gone else o for o in observed]
    names = [s.name for s in make_slots("f1.example.com", 4)]
    # Above since +60: the grace (120 s) ends at +180 (slot 2, the youngest), again at +300
    # (slot 1, the next youngest); down at +360, so +420 starts a new grace.
    assert shed == [[], [], [], [names[2]], [], [names[1]], [], []]
    assert state.sheds == 2 and state.last_machine == names[1]


def test_the_message_is_code_100_and_not_an_abort(conf):
    config = conf()
    result = plan(config, memory(30.0), ShedState(above_since=NOW - 200))
    [destroy] = result.destroys
    assert destroy.message.startswith("100 Vac sheds the machine: the host is short of memory "
                                      "(memory full avg10 30.00% above shed_memory_full 10% "
                                      "for 200 s)")
    assert not outcome.is_abort(destroy.message)


def test_creation_stops_while_memory_is_short(conf):
    config = conf()
    free = [Observed(slot=s) for s in make_slots("f1.example.com", 4)]
    result = plan(config, memory(11.0), None, observed=free)
    assert result.creates == ()
    why = result.idle[0].why
    assert why.kind == planfile.PRESSURE and why.resource == "memory" and why.value == 11.0
    assert "shed_memory_full 10% (shedding machines)" in why.text
    assert len(plan(config, memory(9.0), None, observed=free).creates) == 4


def test_no_reading_no_shedding(conf):
    result = plan(conf(), None, ShedState(above_since=NOW - 1000, value=50.0))
    assert result.destroys == () and result.shed_state.above_since is None


@pytest.mark.parametrize("text", ["shed_memory_full = 0", "shed_memory_full = 101",
                                  "shed_grace_seconds = -1"])
def test_bad_values_are_refused(make_config, text):
    with pytest.raises(ConfigError) as caught:
        make_config(CONF.format(settings=text))
    assert text.split()[0] in str(caught.value)


def test_the_factory_sheds_on_a_synthetic_trace(make_factory, tmp_path):
    """Three fake machines run; memory full goes to 50% with shedding at 10% after 60 s: the
    cycle that sees it holds creation, the one a grace later destroys the youngest machine,
    whose shutdown_message is the shed message, and creates nothing in its slot."""
    factory, _, clock = make_factory()
    trace = [0.0, 50.0, 50.0]
    factory.pressure = HostPressure(lambda now: memory(trace.pop(0), now))
    assert len(factory.run_cycle().created) == 3
    conf = tmp_path / "vac.conf"
    conf.write_text(conf.read_text().replace(
        "[settings]\n", "[settings]\nshed_memory_full = 10\nshed_grace_seconds = 60\n", 1))
    clock.now += 60
    first = factory.run_cycle()
    assert first.destroyed == [] and first.created == []
    clock.now += 61
    second = factory.run_cycle()
    assert len(second.destroyed) == 1 and second.created == []
    assert factory.pressure.shed.sheds == 1
    name = second.destroyed[0]
    assert factory.pressure.shed.last_machine == name
    message = MachineDir.for_slot(factory.config.settings.paths, name).shutdown_message
    assert message.startswith("100 Vac sheds the machine: the host is short of memory")
