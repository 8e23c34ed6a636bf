# SPDX-License-Identifier: BSD-2-Clause
"""Opportunistic mode's decision, pure: the planner with vac.cycle.yielding given
samples of the load from outside the machines and the clock. Off by default; the youngest
machine yields after the grace with a code-100 message (no abort, no backoff); creation pauses
and is held while the load is high; the next youngest goes one grace later; superslots stay
counted; an unmeasured sample or a long gap restarts the grace."""
from __future__ import annotations

import random

import pytest

from vac.cycle import planner, yielding
from vac.cycle.yielding import Sample, YieldState
from vac.machine import outcome
from vac.machine.directory import MachineState
from vac.machine.observed import Observed
from vac.machine.outcome import LastOutcome
from vac.machine.slots import make_slots
from vac.space import censusdata

NOW = 1_700_000_000.0
SETTINGS = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
overload_per_processor = 100
host_processors = {slots}
cycle_seconds = 10
{settings}

[machinetype a]
machine_model = fake
target_share = 1
fizzle_seconds = 600
backoff_seconds = 1000
{mt}
"""
YIELD = """
yield_load_per_processor = 0.5
yield_grace_seconds = 100
yield_pause_seconds = 300
"""


@pytest.fixture
def conf(make_config):
    def build(slots=4, settings=YIELD, mt=""):
        return make_config(SETTINGS.format(slots=slots, settings=settings, mt=mt))
    return build


def slots(n=4):
    return make_slots("f1.example.com", n)


def running(slot, started, **kw):
    values = dict(created=int(started) - 5, started=started, processors=1,
                  shutdown_time=int(NOW + 80_000), cpu_seconds=10.0, last_heartbeat=NOW - 10)
    values.update(kw)
    return Observed(slot=slot, machinetype="a", model="fake", state=MachineState.RUNNING,
                    **values)


def full(n=4, ages=(4000, 3000, 2000, 1000)):
    """Every slot running; slot i started ages[i] seconds ago (the last is the youngest)."""
    return [running(s, NOW - age) for s, age in zip(slots(n), ages)]


def plan(config, observed, state=None, sample=None, now=NOW, census=None):
    if census is None:
        census = censusdata.local_census(observed, {}, config.machinetypes, now)
    return planner.plan(config, observed, census, load=0.0, now=now,
                        daemon_started=NOW - 100_000, rng=random.Random(1),
                        yield_state=state, owner=sample)


def high(now, load=1.0, length=10.0):
    return Sample(now - length, now, load)


def run(config, observed, samples, state=None):
    """Plan once per (now, sample); the yielded machines leave the observation. Returns the
    plans and the final state."""
    plans = []
    for now, sample in samples:
        p = plan(config, observed, state, sample, now)
        state = p.yield_state
        gone = {d.name for d in p.destroys}
        observed = [Observed(slot=o.slot) if o.slot.name in gone else o for o in observed]
        plans.append(p)
    return plans, state


def test_off_by_default_no_yield_and_no_state(conf):
    config = conf(settings="")
    assert config.settings.yield_load_per_processor is None
    p = plan(config, full(), YieldState(above_since=NOW - 10_000), high(NOW, 4.0))
    assert p.destroys == () and p.yield_state is None
    assert p.counts.running_machines == 4


def test_youngest_yields_only_after_the_grace_with_a_code_100_message(conf):
    config = conf()
    samples = [(NOW + t, high(NOW + t)) for t in range(0, 120, 10)]   # high from NOW - 10
    plans, state = run(config, full(), samples)
    destroyed = [(i, d) for i, p in enumerate(plans) for d in p.destroys]
    assert len(destroyed) == 1
    index, destroy = destroyed[0]
    assert samples[index][0] == NOW + 90       # above since NOW - 10, grace 100
    assert destroy.name == slots()[3].name     # the youngest
    assert destroy.message.startswith("100 Vac yields to the host's owner: load outside the "
                                      "machines 1.00 per processor above "
                                      "yield_load_per_processor 0.5 for 100 s")
    assert not outcome.is_abort(destroy.message)
    assert state.yields == 1 and state.last_machine == slots()[3].name
    assert state.paused_until == NOW + 90 + 300
    before = plans[index - 1]
    assert before.destroys == () and before.yield_state.above_since == NOW - 10


def test_while_the_load_is_high_nothing_is_created(conf):
    config = conf()
    observed = full()[:3] + [Observed(slot=slots()[3])]
    p = plan(config, observed, YieldState(), high(NOW))
    assert p.creates == ()
    (reason,) = set(p.idle_reasons().values())
    assert reason.startswith("yielding to the host's owner: load outside the machines 1.00 "
                             "per processor > yield_load_per_processor 0.5 since "
                             f"{int(NOW - 10)}")


def test_creation_pauses_until_the_pause_ends_then_resumes(conf):
    config = conf()
    state = YieldState(above_since=NOW - 100, owner=1.0)
    p = plan(config, full(), state, high(NOW))
    assert [d.name for d in p.destroys] == [slots()[3].name]
    (reason,) = set(p.idle_reasons().values())
    assert reason.startswith(f"yielding to the host's owner: creation paused until "
                             f"{int(NOW + 300)} (")
    assert reason.endswith(f") after {slots()[3].name} yielded")
    observed = full()[:3] + [Observed(slot=slots()[3])]
    quiet = p.yield_state
    during = plan(config, observed, quiet, Sample(NOW + 290, NOW + 299, 0.1), NOW + 299)
    assert during.creates == () and "paused until" in during.idle[0].reason
    after = plan(config, observed, during.yield_state, Sample(NOW + 299, NOW + 301, 0.1),
                 NOW + 301)
    assert [c.slot.name for c in after.creates] == [slots()[3].name]
    assert after.yield_state.above_since is None


def test_the_next_youngest_goes_one_grace_later_if_the_load_stays_high(conf):
    config = conf()
    samples = [(NOW + t, high(NOW + t)) for t in range(0, 400, 10)]
    plans, state = run(config, full(), samples)
    yields = [(samples[i][0], d.name) for i, p in enumerate(plans) for d in p.destroys]
    assert yields == [(NOW + 90, slots()[3].name), (NOW + 190, slots()[2].name),
                      (NOW + 290, slots()[1].name), (NOW + 390, slots()[0].name)]
    assert all(p.creates == () for p in plans)
    assert state.yields == 4 and state.paused_until == NOW + 390 + 300


def test_a_low_sample_restarts_the_grace(conf):
    config = conf()
    samples = [(NOW + t, high(NOW + t)) for t in range(0, 60, 10)]
    samples.append((NOW + 60, high(NOW + 60, load=0.4)))      # 0.4 <= 0.5
    samples += [(NOW + t, high(NOW + t)) for t in range(70, 190, 10)]
    plans, _ = run(config, full(), samples)
    yields = [samples[i][0] for i, p in enumerate(plans) if p.destroys]
    assert yields == [NOW + 160]      # above again since NOW + 60, grace 100


def test_an_unmeasured_sample_restarts_the_grace_and_never_yields(conf):
    config = conf()
    state = YieldState(above_since=NOW - 1000, owner=1.0)
    p = plan(config, full(), state, Sample(NOW - 10, NOW, None, problem="backend down"))
    assert p.destroys == () and p.yield_state.above_since is None
    assert p.yield_state.owner is None


def test_a_sample_after_a_long_gap_starts_the_grace_at_its_end(conf):
    config = conf()     # max gap: max(grace 100, 3 x cycle 10)
    p = plan(config, full(), YieldState(above_since=NOW - 5000), Sample(NOW - 3600, NOW, 1.0))
    assert p.destroys == () and p.yield_state.above_since == NOW
    p = plan(config, full(), YieldState(), Sample(NOW - 100, NOW, 1.0))
    assert [d.name for d in p.destroys] == [slots()[3].name]   # 100 s is one sample still


def test_youngest_by_start_then_creation_then_slot():
    s = slots(4)
    assert yielding.youngest([running(s[0], NOW - 5), running(s[1], NOW - 50)]).slot == s[0]
    same = [running(s[0], NOW - 5, created=int(NOW) - 9), running(s[1], NOW - 5,
                                                                   created=int(NOW) - 7)]
    assert yielding.youngest(same).slot == s[1]
    tie = [running(s[2], NOW - 5, created=1), running(s[1], NOW - 5, created=1)]
    assert yielding.youngest(tie).slot == s[2]
    assert yielding.youngest([]) is None


def test_a_machine_already_destroyed_this_cycle_is_not_the_one_that_yields(conf):
    config = conf()
    observed = full()
    observed[3] = running(slots()[3], NOW - 1000, shutdown_time=int(NOW - 1))   # past its time
    p = plan(config, observed, YieldState(above_since=NOW - 100, owner=1.0), high(NOW))
    reasons = {d.name: d.message for d in p.destroys}
    assert reasons[slots()[3].name] == planner.SHUTDOWN_TIME_REACHED
    assert reasons[slots()[2].name].startswith("100 Vac yields")
    assert p.counts.running_machines == 2


def test_superslots_yielded_processors_leave_the_superslot_which_is_refilled_first(conf):
    config = conf(8, YIELD + "processors_per_superslot = 4\n",
                  mt="max_processors = 4\nmin_wallclock_seconds = 3600")
    s = slots(8)
    end_a, end_b = int(NOW + 50_000), int(NOW + 80_000)
    observed = [running(s[i], NOW - 4000 + i, processors=2, shutdown_time=end_a)
                for i in (0, 2)]
    observed += [running(s[i], NOW - 1000 + i, processors=2, shutdown_time=end_b)
                 for i in (4, 6)]
    observed += [Observed(slot=s[i]) for i in (1, 3, 5, 7)]
    observed.sort(key=lambda o: o.slot.ordinal)
    p = plan(config, observed, YieldState(above_since=NOW - 100, owner=1.0), high(NOW))
    assert [d.name for d in p.destroys] == [s[6].name]
    assert p.counts.running_processors == 6 and p.counts.running_machines == 3
    left = [Observed(slot=o.slot) if o.slot == s[6] else o for o in observed]
    later = NOW + 400
    again = plan(config, left, p.yield_state, Sample(later - 10, later, 0.0), later)
    assert again.creates and again.creates[0].shutdown_time == end_b   # superslot B first
    assert again.creates[0].processors == 2


def test_a_yield_causes_no_backoff_of_its_machinetype(conf):
    config = conf()
    state = YieldState(above_since=NOW - 100, owner=1.0)
    observed = full(ages=(4000, 3000, 2000, 30))          # the youngest is before fizzle
    p = plan(config, observed, state, high(NOW))
    (destroy,) = p.destroys
    assert outcome.outcome_message(destroy.message, NOW - 30, NOW, 600) == destroy.message
    left = observed[:3] + [Observed(slot=slots()[3])]
    last = LastOutcome(message=destroy.message, time=NOW, machine=destroy.name,
                       started=NOW - 30, created=int(NOW - 35))
    later = NOW + 301
    census = censusdata.local_census(left, {"a": last}, config.machinetypes, later)
    after = plan(config, left, p.yield_state, Sample(later - 10, later, 0.0), later, census)
    assert [c.slot.name for c in after.creates] == [slots()[3].name]
    assert not any("backoff" in n for n in after.notes)


def test_a_refill_without_a_sample_keeps_the_pause_and_never_yields(conf):
    config = conf()
    state = YieldState(above_since=NOW - 1000, paused_until=NOW + 50, owner=1.0,
                       last_machine="x")
    observed = full()[:3] + [Observed(slot=slots()[3])]
    p = plan(config, observed, state, None)
    assert p.destroys == () and p.creates == () and p.yield_state == state
    assert "paused until" in p.idle[0].reason


def test_state_round_trips_and_garbage_reads_as_fresh():
    state = YieldState(above_since=1.5, paused_until=2.0, owner=0.75, sampled=3.0,
                       last_yield=1.0, last_machine="m", yields=2)
    assert YieldState.from_json(state.to_json()) == state
    assert YieldState.from_json("nonsense") == YieldState()
    odd = YieldState.from_json({"above_since": "x", "yields": -3, "owner": float("nan"),
                                "last_machine": 5})
    assert odd == YieldState()


@pytest.mark.parametrize("option,value,problem", [
    ("yield_load_per_processor", "0", "must be greater than 0"),
    ("yield_load_per_processor", "-1", "must be greater than 0"),
    ("yield_grace_seconds", "-1", "must not be negative"),
    ("yield_pause_seconds", "-5", "must not be negative"),
])
def test_bad_values_are_rejected(make_config, option, value, problem):
    from vac.errors import ConfigError
    with pytest.raises(ConfigError) as e:
        make_config(SETTINGS.format(slots=4, settings=f"{option} = {value}", mt=""))
    assert option in str(e.value) and problem in str(e.value)
