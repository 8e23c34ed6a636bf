# SPDX-License-Identifier: BSD-2-Clause
"""The cycle plan: per-slot decisions, the creation gate, shares, backoff/fizzle, superslots."""
from __future__ import annotations

import dataclasses
import random
from typing import Dict, Optional

import pytest

from vac import planfile
from vac.cycle import planner
from vac.machine import outcome
from vac.machine.directory import MachineState
from vac.machine.observed import Observed
from vac.machine.outcome import LastOutcome
from vac.machine.slots import make_slots
from vac.space import censusdata
from vac.space.censusdata import Census

NOW = 1_700_000_000.0
LONG_AGO = NOW - 100_000  # daemon start: heartbeat-file grace long over

SETTINGS = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
overload_per_processor = 1.5
host_processors = {slots}
{settings}
"""

MACHINETYPE = """
[machinetype {name}]
machine_model = fake
target_share = {share}
fizzle_seconds = 600
backoff_seconds = 1000
{options}
"""

RUNNING, SHUTDOWN, STARTING, PAUSED = (MachineState.RUNNING, MachineState.SHUTDOWN,
                                       MachineState.STARTING, MachineState.PAUSED)


@pytest.fixture
def conf(make_config):
    """conf(slots, settings="", a="", b=None, ...) -> Config; a/b/c: machinetype options."""

    def build(slots=4, settings="", shares_=None, **types):
        text = SETTINGS.format(slots=slots, settings=settings)
        if not types:
            types = {"a": ""}
        for name, options in types.items():
            share = (shares_ or {}).get(name, 1)
            text += MACHINETYPE.format(name=name, share=share, options=options)
        return make_config(text)

    return build


def slots(n=4):
    return make_slots("f1.example.com", n)


def free(n=4):
    return [Observed(slot=s) for s in slots(n)]


def running(slot, mt="a", **kw):
    values = dict(created=int(NOW - 7200), started=NOW - 7000, processors=1,
                  shutdown_time=int(NOW + 80_000), cpu_seconds=123.0, last_heartbeat=NOW - 60)
    values.update(kw)
    return Observed(slot=slot, machinetype=mt, model="fake", state=RUNNING, **values)


def make_plan(config, observed, census=None, load=0.0, now=NOW, daemon_started=LONG_AGO,
              seed=1):
    if census is None:
        census = censusdata.local_census(observed, {}, config.machinetypes, now)
    return planner.plan(config, observed, census, load=load, now=now,
                        daemon_started=daemon_started, rng=random.Random(seed))


def created_names(plan):
    return [c.slot.name for c in plan.creates]


def reasons(plan):
    return set(plan.idle_reasons().values())


# Creation: many per cycle, the creation gate, the cap ---------------------------------------

def test_creates_in_every_free_slot_in_one_cycle(conf):
    plan = make_plan(conf(4), free(4))
    assert created_names(plan) == [s.name for s in slots(4)]
    assert all(c.machinetype == "a" and c.processors == 1 for c in plan.creates)
    assert plan.idle == ()


def test_max_creations_per_cycle_caps_creation(conf):
    plan = make_plan(conf(6, "max_creations_per_cycle = 2"), free(6))
    assert created_names(plan) == [s.name for s in slots(2)]
    assert reasons(plan) == {"max_creations_per_cycle reached (2)"}
    assert [i.slot.ordinal for i in plan.idle] == [2, 3, 4, 5]


def test_new_machines_go_into_lowest_free_slots(conf):
    observed = free(6)
    observed[0] = running(observed[0].slot)
    observed[2] = running(observed[2].slot)
    plan = make_plan(conf(6, "max_creations_per_cycle = 2"), observed)
    assert [c.slot.ordinal for c in plan.creates] == [1, 3]


def test_unordered_observations_are_taken_in_slot_order(conf):
    plan = make_plan(conf(4, "max_creations_per_cycle = 1"), list(reversed(free(4))))
    assert [c.slot.ordinal for c in plan.creates] == [0]


def test_overload_by_load_on_running_processors(conf):
    # 5 running processors, load 8 > 1.5 x 5: nothing more is created
    observed = [running(s) for s in slots(5)] + free(10)[5:]
    plan = make_plan(conf(10), observed, load=8.0)
    assert plan.creates == ()
    (reason,) = reasons(plan)
    assert reason.startswith("overload: load 8.00 > overload_per_processor 1.5 x 5 running")


def test_overload_by_load_on_all_processors(conf):
    plan = make_plan(conf(4), free(4), load=6.5)  # 6.5 > 1.5 x 4
    assert plan.creates == ()
    (reason,) = reasons(plan)
    assert reason.startswith("overload: load 6.50 > overload_per_processor 1.5 x 4 processors")


def test_load_rule_is_rechecked_with_planned_machines_counted(conf):
    # load 9 from outside Vac: 5 planned machines make R = 5 > 4, and the load the gate sees
    # is 9 + the 5 processors just started: 14 > 1.5 x 5
    plan = make_plan(conf(10), free(10), load=9.0)
    assert len(plan.creates) == 5
    (reason,) = reasons(plan)
    assert reason.startswith("overload: load 14.00 (9.00 + 5 started this cycle) > "
                             "overload_per_processor 1.5 x 5 running")


def test_low_load_creates_everything(conf):
    # 2 + n <= 1.5 x n for every n > 4, and 2 + 10 < 1.5 x 10
    plan = make_plan(conf(10), free(10), load=2.0)
    assert len(plan.creates) == 10


def test_the_gate_sees_its_own_starts_and_stops_a_fill_mid_cycle(conf):
    # The original compared every creation with the reading taken before the cycle: 7.4 was
    # below 1.5 x n for every n it reached, so all 10 started and the host went to 17.4.
    plan = make_plan(conf(10), free(10), load=7.4)
    assert len(plan.creates) == 5                          # 7.4 + 5 > 1.5 x 5
    # On a 32-processor host loaded to 40 from outside: the all-processors rule, 40 + n > 48.
    busy = make_plan(conf(32, "overload_per_processor = 100"), free(32), load=40.0)
    assert len(busy.creates) == 32
    loaded = make_plan(conf(32), free(32), load=40.0)
    (reason,) = reasons(loaded)
    assert len(loaded.creates) == 5 and "40.00 + 5 started" in reason


def test_total_processors_limit(conf):
    # total_processors 3 of 6 counted; two run already
    observed = [running(s) for s in slots(2)] + free(6)[2:]
    plan = make_plan(conf(6, "total_processors = 3"), observed)
    assert [c.slot.ordinal for c in plan.creates] == [2]
    assert reasons(plan) == {"total_processors limit: 3 of 3 processors in use"}


def test_nothing_after_global_shutdown_time(conf):
    config = conf(4, f"shutdown_time = {int(NOW - 1)}")
    plan = make_plan(config, free(4))
    assert plan.creates == ()
    assert reasons(plan) == {f"after shutdown_time {int(NOW - 1)}"}


def test_draining_creates_nothing(conf):
    plan = make_plan(conf(4, "draining = yes"), free(4))
    assert plan.creates == () and reasons(plan) == {"draining"}


def test_no_machinetypes_configured(make_config):
    config = make_config(SETTINGS.format(slots=2, settings=""))
    plan = make_plan(config, free(2))
    assert reasons(plan) == {"no machinetypes configured"}


def test_zero_share_machinetype_is_never_created(conf):
    plan = make_plan(conf(2, shares_={"a": 0}, a=""), free(2))
    assert plan.creates == () and reasons(plan) == {"no machinetype has a share"}


def test_min_wallclock_must_fit_before_global_shutdown_time(conf):
    config = conf(2, f"shutdown_time = {int(NOW + 5000)}", a="min_wallclock_seconds = 5000",
                  b="min_wallclock_seconds = 4999\nmax_wallclock_seconds = 9000")
    plan = make_plan(config, free(2))
    assert [c.machinetype for c in plan.creates] == ["b", "b"]
    # created with the full max_wallclock; the next cycle lowers it to the superslot's end
    assert plan.creates[0].shutdown_time == int(NOW) + 9000
    config = conf(2, f"shutdown_time = {int(NOW + 5000)}", a="min_wallclock_seconds = 5000")
    (reason,) = reasons(make_plan(config, free(2)))
    assert reason == (f"a: min_wallclock_seconds 5000 would end after shutdown_time "
                      f"{int(NOW + 5000)}")


def test_unoccupied_slots_get_no_reason_when_all_are_filled(conf):
    observed = [running(s) for s in slots(4)]
    plan = make_plan(conf(4), observed)
    assert plan.idle == () and plan.creates == ()


def test_idle_unpacks_as_slot_and_reason(conf):
    plan = make_plan(conf(1, "draining = yes"), free(1))
    ((slot, reason),) = plan.idle
    assert slot.ordinal == 0 and reason == "draining"


# Target shares across the space ----------------------------------------------------------------

def test_space_wide_scores_favour_the_starved_machinegroup(conf):
    config = conf(1, a="accounting_fqan = /atlas/Role=NULL",
                  b="accounting_fqan = /atlas/Role=NULL", c="machinegroup = lhcb")
    # the atlas group runs 12 HS06 elsewhere in the space (b alone is starved within it);
    # lhcb runs 5: the starved group wins over the starved machinetype
    census = {"a": Census(running_hs06=12.0), "b": Census(), "c": Census(running_hs06=5.0)}
    plan = make_plan(config, free(1), census=census)
    assert [c.machinetype for c in plan.creates] == ["c"]
    census["c"] = Census(running_hs06=13.0)
    plan = make_plan(config, free(1), census=census)
    assert [c.machinetype for c in plan.creates] == ["b"]


def test_many_creations_follow_target_shares(conf):
    config = conf(12, shares_={"a": 1, "b": 2}, a="", b="")
    plan = make_plan(config, free(12))
    counts = {"a": 0, "b": 0}
    for c in plan.creates:
        counts[c.machinetype] += 1
    assert counts == {"a": 4, "b": 8}


def test_target_shares_count_the_whole_space(conf):
    config = conf(6, a="", b="")
    census = {"a": Census(running_hs06=10.0), "b": Census(running_hs06=4.0)}
    plan = make_plan(config, free(6), census=census)
    counts = {"a": 0, "b": 0}
    for c in plan.creates:
        counts[c.machinetype] += 1
    assert counts == {"a": 0, "b": 6}


def test_hs06_per_processor_weights_planned_machines(conf):
    config = conf(4, "hs06_per_processor = 10", a="", b="")
    census = {"a": Census(running_hs06=15.0), "b": Census()}
    plan = make_plan(config, free(4), census=census)
    assert [c.machinetype for c in plan.creates] == ["b", "b", "a", "b"]


# Backoff and fizzle ----------------------------------------------------------------------------

def test_abort_anywhere_in_space_blocks_until_backoff_ends(conf):
    config = conf(2)
    census = {"a": Census(last_abort_time=NOW - 400)}  # backoff 1000
    plan = make_plan(config, free(2), census=census)
    assert plan.creates == ()
    assert reasons(plan) == {f"backoff of a until {int(NOW + 600)}"}
    plan = make_plan(config, free(2), census=census, now=NOW + 601)
    assert len(plan.creates) == 1  # a probe: it is before fizzle, so the embargo grows
    plan = make_plan(config, free(2), census=census, now=NOW + 1201)
    assert len(plan.creates) == 2  # past backoff + fizzle: shares decide again


def test_other_machinetype_fills_while_one_backs_off(conf):
    config = conf(3, a="", b="")
    census = {"a": Census(last_abort_time=NOW - 10)}
    plan = make_plan(config, free(3), census=census)
    assert [c.machinetype for c in plan.creates] == ["b", "b", "b"]


def test_after_backoff_young_machines_extend_embargo_by_fizzle(conf):
    config = conf(2)
    census = {"a": Census(last_abort_time=NOW - 1100, num_before_fizzle=1)}
    plan = make_plan(config, free(2), census=census)
    assert plan.creates == ()
    assert reasons(plan) == {f"backoff of a until {int(NOW - 1100 + 1000 + 600)}"}
    assert make_plan(config, free(2), census=census, now=NOW + 501).creates != ()


def test_after_backoff_only_one_probe_is_created(conf):
    config = conf(4)
    census = {"a": Census(last_abort_time=NOW - 1001)}
    plan = make_plan(config, free(4), census=census)
    assert created_names(plan) == [slots(1)[0].name]
    assert reasons(plan) == {f"backoff of a until {int(NOW - 1001 + 1600)}"}


def test_success_message_does_not_back_off(conf):
    config = conf(2)
    outcomes = {"a": LastOutcome("200 Success", NOW - 10, "f1-00.example.com", NOW - 100)}
    census = censusdata.local_census([], outcomes, config.machinetypes, NOW)
    assert len(make_plan(config, free(2), census=census).creates) == 2


def test_machine_ended_now_with_abort_backs_off_in_the_same_cycle(conf):
    config = conf(2)
    observed = free(2)
    observed[0] = dataclasses.replace(running(observed[0].slot), state=SHUTDOWN,
                                      shutdown_message="300 No HTCondor job to run")
    plan = make_plan(config, observed)
    assert [f.name for f in plan.finishes] == [observed[0].slot.name]
    assert plan.creates == ()
    assert reasons(plan) == {f"backoff of a until {int(NOW + 1000)}"}


def test_short_run_without_message_backs_off(conf):
    # ran 120 s < fizzle 600, no message -> "300 Vac detects fizzle"
    config = conf(2)
    observed = free(2)
    observed[1] = dataclasses.replace(running(observed[1].slot, started=NOW - 120),
                                      state=SHUTDOWN)
    plan = make_plan(config, observed)
    assert plan.creates == ()
    assert "backoff of a" in reasons(plan).pop()


class Space:
    """A simulated factory: applies plans to its observations the way vac.factory does."""

    def __init__(self, config, n):
        self.config = config
        self.observed = free(n)
        self.outcomes: Dict[str, LastOutcome] = {}

    def cycle(self, now, load=0.0):
        census = censusdata.local_census(self.observed, self.outcomes, self.config.machinetypes,
                                         now)
        plan = planner.plan(self.config, self.observed, census, load=load, now=now,
                            daemon_started=LONG_AGO, rng=random.Random(3))
        by_slot = {o.slot.name: i for i, o in enumerate(self.observed)}
        for beat in plan.heartbeats:
            self._set(by_slot[beat.name], last_heartbeat=now)
        ending = [f.name for f in plan.finishes]
        for d in plan.destroys:
            obs = self.observed[by_slot[d.name]]
            self._set(by_slot[d.name], state=SHUTDOWN,
                      shutdown_message=obs.shutdown_message or d.message)
            ending.append(d.name)
        for name in ending:
            self._finish(by_slot[name], now)
        for c in plan.creates:
            self.observed[c.slot.ordinal] = Observed(
                slot=c.slot, machinetype=c.machinetype, model="fake", state=RUNNING,
                created=int(now), started=now, processors=c.processors,
                shutdown_time=c.shutdown_time, last_heartbeat=now)
        return plan

    def end(self, ordinal, message: Optional[str] = None):
        """The machine in this slot stops by itself."""
        self._set(ordinal, state=SHUTDOWN, shutdown_message=message)

    def _finish(self, i, now):
        obs = self.observed[i]
        mt = self.config.machinetypes[obs.machinetype]
        message = outcome.outcome_message(obs.shutdown_message, obs.started, now,
                                         mt.fizzle_seconds)
        self.outcomes[obs.machinetype] = LastOutcome(message, now, obs.slot.name, obs.started,
                                                     obs.created)
        self.observed[i] = Observed(slot=obs.slot)

    def _set(self, i, **kw):
        self.observed[i] = dataclasses.replace(self.observed[i], **kw)


def test_fizzle_backoff_probe_cycle(conf):
    """Fizzles -> backoff -> one probe after backoff -> full creation once it passes fizzle."""
    space = Space(conf(3), 3)
    t = NOW
    assert len(space.cycle(t).creates) == 3
    for i in range(3):
        space.end(i)  # ran 90 s < fizzle 600 s with no shutdown message
    t += 90
    plan = space.cycle(t)
    assert len(plan.finishes) == 3 and plan.creates == ()
    assert space.outcomes["a"].message == "300 Vac detects fizzle after 90 seconds"
    assert reasons(plan) == {f"backoff of a until {int(t + 1000)}"}
    abort = t
    assert space.cycle(abort + 1000).creates == ()  # still in backoff (strictly after)
    plan = space.cycle(abort + 1001)
    assert created_names(plan) == [slots(1)[0].name]  # one probe
    assert reasons(plan) == {f"backoff of a until {int(abort + 1600)}"}
    plan = space.cycle(abort + 1300)  # the probe is still before fizzle
    assert plan.creates == ()
    assert reasons(plan) == {f"backoff of a until {int(abort + 1600)}"}
    plan = space.cycle(abort + 1601)  # the probe survived; no new abort
    assert len(plan.creates) == 2


def test_probe_that_fizzles_restarts_the_backoff(conf):
    space = Space(conf(3), 3)
    space.cycle(NOW)
    for i in range(3):
        space.end(i, "500 Missing vdb block device")
    space.cycle(NOW + 60)
    assert len(space.cycle(NOW + 1061).creates) == 1  # the probe
    space.end(0)  # the probe fizzles: 200 s, no message
    plan = space.cycle(NOW + 1261)
    assert plan.creates == ()
    assert reasons(plan) == {f"backoff of a until {int(NOW + 1261 + 1000)}"}
    assert space.outcomes["a"].message == "300 Vac detects fizzle after 200 seconds"
    assert len(space.cycle(NOW + 2262).creates) == 1  # the next probe


def test_backoff_does_not_hold_back_other_machinetypes_in_same_cycle(conf):
    space = Space(conf(4, a="", b=""), 4)
    space.cycle(NOW)
    kinds = [o.machinetype for o in space.observed]
    for i, kind in enumerate(kinds):
        if kind == "a":
            space.end(i, "300 No work")
    plan = space.cycle(NOW + 700)
    assert plan.creates and all(c.machinetype == "b" for c in plan.creates)


# Running machines: per-slot processing and heartbeat enforcement -------------------------------

def test_running_machines_get_heartbeats(conf):
    observed = [running(s, cpu_seconds=10.0 * s.ordinal) for s in slots(2)] + free(3)[2:]
    plan = make_plan(conf(3), observed)
    assert [(h.name, h.cpu_seconds) for h in plan.heartbeats] == \
        [(slots(1)[0].name, 0.0), (slots(2)[1].name, 10.0)]
    assert plan.destroys == () and plan.finishes == ()
    assert plan.counts.text() == "2 3 2 3 2.00"


def test_machine_past_shutdown_time_is_destroyed_and_slot_refilled(conf):
    # destroyed at its shutdown time, and the freed slot is refilled in the same cycle
    observed = [running(slots(1)[0], shutdown_time=int(NOW - 1))]
    plan = make_plan(conf(1), observed)
    (d,) = plan.destroys
    assert d.message == planner.SHUTDOWN_TIME_REACHED and "shutdown time" in d.reason
    assert not outcome.is_abort(d.message)  # a machine Vac stopped is not a fizzle
    assert created_names(plan) == [slots(1)[0].name]


def test_machine_without_shutdown_time_is_not_past_it(conf):
    plan = make_plan(conf(1), [running(slots(1)[0], shutdown_time=None)])
    assert plan.destroys == ()


def test_global_shutdown_time_lowers_machine_shutdown_time(conf):
    st = int(NOW + 3600)
    observed = [running(slots(2)[0]), running(slots(2)[1], shutdown_time=st - 100)]
    plan = make_plan(conf(2, f"shutdown_time = {st}"), observed)
    assert [(x.name, x.new_time) for x in plan.lower_shutdown] == [(slots(1)[0].name, st)]
    assert plan.destroys == ()


def test_global_shutdown_time_passed_destroys_running_machines(conf):
    st = int(NOW - 10)
    plan = make_plan(conf(1, f"shutdown_time = {st}"), [running(slots(1)[0])])
    assert [x.new_time for x in plan.lower_shutdown] == [st]
    assert [d.name for d in plan.destroys] == [slots(1)[0].name]
    assert plan.creates == () and reasons(plan) == {f"after shutdown_time {st}"}


HB = "heartbeat_file = heartbeat\nheartbeat_seconds = 600"


def test_heartbeat_file_never_created(conf):
    observed = [running(slots(1)[0], started=NOW - 601, heartbeat_file_mtime=None)]
    plan = make_plan(conf(1, a=HB), observed)
    (d,) = plan.destroys
    assert d.message == "700 Heartbeat file not created"


def test_heartbeat_file_not_updated(conf):
    observed = [running(slots(1)[0], heartbeat_file_mtime=NOW - 601)]
    (d,) = make_plan(conf(1, a=HB), observed).destroys
    assert d.message == "700 Heartbeat file not updated"


def test_fresh_heartbeat_file_keeps_machine(conf):
    observed = [running(slots(1)[0], heartbeat_file_mtime=NOW - 599)]
    assert make_plan(conf(1, a=HB), observed).destroys == ()


def test_heartbeat_seconds_zero_checks_existence_only(conf):
    observed = [running(slots(1)[0], heartbeat_file_mtime=NOW - 50_000)]
    plan = make_plan(conf(1, a="heartbeat_file = heartbeat"), observed)
    assert plan.destroys == ()


def test_heartbeat_file_grace_after_machine_start(conf):
    observed = [running(slots(1)[0], started=NOW - 600, heartbeat_file_mtime=None)]
    assert make_plan(conf(1, a=HB), observed).destroys == ()


def test_heartbeat_file_checks_suspended_after_daemon_start(conf):
    observed = [running(slots(1)[0], heartbeat_file_mtime=None)]
    assert make_plan(conf(1, a=HB), observed, daemon_started=NOW - 600).destroys == ()
    assert len(make_plan(conf(1, a=HB), observed, daemon_started=NOW - 601).destroys) == 1


def test_heartbeat_file_rule_needs_fizzle_seconds_and_configured_type(conf):
    observed = [running(slots(1)[0], heartbeat_file_mtime=None)]
    assert make_plan(conf(1, a=HB + "\nfizzle_seconds = 0"), observed).destroys == ()
    gone = [running(slots(1)[0], mt="gone", heartbeat_file_mtime=None)]
    assert make_plan(conf(1, a=HB), gone).destroys == ()


def test_heartbeat_destroy_is_an_abort_and_slot_backs_off(conf):
    observed = [running(slots(2)[0], heartbeat_file_mtime=None)] + free(2)[1:]
    plan = make_plan(conf(2, a=HB), observed)
    assert len(plan.destroys) == 1 and plan.creates == ()
    assert reasons(plan) == {f"backoff of a until {int(NOW + 1000)}"}


def test_machines_own_message_decides_outcome(conf):
    # Vac's message is written only if the machine wrote none, and the census
    # judges the machine by its own message
    observed = [running(slots(2)[0], heartbeat_file_mtime=None,
                        shutdown_message="200 Success")] + free(2)[1:]
    plan = make_plan(conf(2, a=HB), observed)
    assert plan.destroys[0].message == "700 Heartbeat file not created"
    assert len(plan.creates) == 2  # no backoff: the machine said 200


def test_paused_machine_is_destroyed(conf):
    observed = [dataclasses.replace(running(slots(1)[0]), state=PAUSED)]
    plan = make_plan(conf(1), observed)
    assert [(d.name, d.reason) for d in plan.destroys] == [(slots(1)[0].name, "paused")]
    assert plan.heartbeats == ()


def test_machine_left_starting_is_destroyed(conf):
    # the factory then marks it finished
    observed = [Observed(slot=slots(1)[0], machinetype="a", model="fake", state=STARTING,
                         created=int(NOW - 60))]
    plan = make_plan(conf(1), observed)
    (d,) = plan.destroys
    assert d.message == planner.CREATION_NOT_FINISHED and outcome.is_abort(d.message)
    assert plan.creates == ()  # failed creations back the machinetype off


def test_finished_machine_that_never_started_is_left_alone(conf):
    observed = [Observed(slot=slots(1)[0], machinetype="a", model="fake", state=STARTING,
                         created=int(NOW - 6000), finished=True,
                         shutdown_message="700 Vac: creation failed")]
    census = censusdata.local_census([], {}, conf(1).machinetypes, NOW)
    plan = make_plan(conf(1), observed, census=census)
    assert plan.destroys == () and plan.finishes == ()
    assert created_names(plan) == [slots(1)[0].name]


def test_shut_down_machine_is_finished_and_slot_refilled(conf):
    observed = [dataclasses.replace(running(slots(2)[0]), state=SHUTDOWN,
                                    shutdown_message="200 Success"),
                Observed(slot=slots(2)[1], machinetype="a", model="fake", state=STARTING,
                         created=int(NOW - 60), finished=False)]
    observed[1] = dataclasses.replace(observed[1], state=SHUTDOWN)
    plan = make_plan(conf(2), observed)
    assert [f.name for f in plan.finishes] == [slots(2)[0].name, slots(2)[1].name]
    assert created_names(plan) == [s.name for s in slots(2)]


def test_unknown_state_is_left_alone_and_keeps_its_processors(conf):
    observed = [dataclasses.replace(running(slots(2)[0], processors=1),
                                    state=MachineState.UNKNOWN)] + free(2)[1:]
    plan = make_plan(conf(2, "total_processors = 1"), observed)
    assert plan.heartbeats == () and plan.destroys == () and plan.finishes == ()
    assert reasons(plan) == {"total_processors limit: 1 of 1 processors in use"}


def test_cvmfs_repositories_of_running_machines(conf):
    config = conf(3, a="cvmfs_repositories = atlas.cern.ch grid.cern.ch",
                  b="cvmfs_repositories = lhcb.cern.ch")
    observed = [running(slots(3)[0], mt="a"),
                running(slots(3)[1], mt="b", shutdown_time=int(NOW - 5))] + free(3)[2:]
    plan = make_plan(config, observed)
    assert plan.cvmfs_repositories == ("atlas.cern.ch", "grid.cern.ch")


# Superslots: size and shutdown time -------------------------------------------------------------

def test_one_processor_superslots(conf):
    plan = make_plan(conf(2, a="max_processors = 4\nmax_wallclock_seconds = 5000"), free(2))
    assert [(c.processors, c.shutdown_time) for c in plan.creates] == \
        [(1, int(NOW) + 5000)] * 2


def test_new_superslot_gets_min_of_free_max_processors_and_size(conf):
    # P = 4, max_processors 3 -> 3, 3, then 2 free processors left -> 2
    config = conf(8, "processors_per_superslot = 4", a="max_processors = 3")
    plan = make_plan(config, free(8))
    assert [c.processors for c in plan.creates] == [3, 1, 3, 1]
    assert sum(c.processors for c in plan.creates) == 8
    assert reasons(plan) == {"total_processors limit: 8 of 8 processors in use"}


def test_incomplete_superslot_is_filled_first_with_same_shutdown_time(conf):
    # 2 processors end at `end`; P = 4 -> a 2-processor machine joins them
    end = int(NOW) + 40_000
    config = conf(8, "processors_per_superslot = 4",
                  a="max_processors = 4\nmin_wallclock_seconds = 3600")
    observed = [running(slots(8)[0], processors=2, shutdown_time=end)] + free(8)[1:]
    plan = make_plan(config, observed)
    assert [(c.processors, c.shutdown_time) for c in plan.creates] == \
        [(2, end), (4, int(NOW) + 86400)]


def test_incomplete_superslot_needs_fitting_wallclock(conf):
    end = int(NOW) + 40_000  # 40000 s left, but min_wallclock = max_wallclock = 86400
    config = conf(6, "processors_per_superslot = 4", a="max_processors = 4")
    observed = [running(slots(6)[0], processors=2, shutdown_time=end)] + free(6)[1:]
    plan = make_plan(config, observed)
    # 2 processors stay reserved for the incomplete superslot, 2 are left
    assert [(c.processors, c.shutdown_time) for c in plan.creates] == \
        [(2, int(NOW) + 86400)]
    (reason,) = reasons(plan)
    assert reason.startswith("nothing fits: 0 free processors after 2 reserved")


def test_min_processors_above_superslot_size_never_fits(conf):
    plan = make_plan(conf(4, a="min_processors = 2\nmax_processors = 2"), free(4))
    assert plan.creates == ()
    (reason,) = reasons(plan)
    assert reason.startswith("nothing fits:") and "min_processors a=2" in reason


def test_smaller_machinetype_fills_what_bigger_cannot(conf):
    config = conf(6, "processors_per_superslot = 4", shares_={"a": 10, "b": 1},
                  a="min_processors = 4\nmax_processors = 4", b="")
    plan = make_plan(config, free(6))
    assert [(c.machinetype, c.processors) for c in plan.creates] == \
        [("a", 4), ("b", 1), ("b", 1)]


# Expiry of old machine directories -------------------------------------------------------------

def test_expired_directories(conf):
    config = conf(1, a="machines_dir_days = 1", b="machines_dir_days = 0")
    day = 86400
    dirs = [
        ("/m/1_a_f1-00.example.com", "a", NOW - day - 1),            # expired
        ("/m/2_a_f1-01.example.com", "a", NOW - day + 1),            # kept
        ("/m/3_b_f1-02.example.com", "b", NOW - 100 * day),          # 0 days: kept forever
        ("/m/4_gone_f1-03.example.com", "gone", NOW - 3 * day - 1),  # unknown type: 3 days
        ("/m/5_gone_f1-04.example.com", "gone", NOW - 3 * day + 1),
        (f"/m/{int(NOW - day - 5)}_a_f1-05.example.com", "a", None),  # no heartbeat: created
        (f"/m/{int(NOW - 5)}_a_f1-06.example.com", "a", None),
        ("/m/junk_a_f1-07.example.com", "a", None),
    ]
    assert planner.expired(dirs, config.machinetypes, NOW) == [
        "/m/1_a_f1-00.example.com", "/m/4_gone_f1-03.example.com",
        f"/m/{int(NOW - day - 5)}_a_f1-05.example.com"]
    assert planner.expired(dirs, config.machinetypes, NOW,
                           keep=["/m/1_a_f1-00.example.com"])[0] == "/m/4_gone_f1-03.example.com"


# Purity ---------------------------------------------------------------------------------------

def test_same_inputs_give_same_plan(conf):
    config = conf(10, a="", b="", c="")
    observed = [running(s, mt="abc"[s.ordinal % 3]) for s in slots(4)] + free(10)[4:]
    assert make_plan(config, observed, seed=5) == make_plan(config, observed, seed=5)


# Idle reasons as data (vac.planfile.IdleReason) -------------------------------------------------

def data(plan):
    """The distinct idle reasons of a plan, as data."""
    return set(plan.idle_data().values())


def test_a_backoff_is_data_with_its_machinetype_and_end(conf):
    plan = make_plan(conf(2), free(2), census={"a": Census(last_abort_time=NOW - 400)})
    (why,) = data(plan)
    assert (why.kind, why.machinetype, why.until) == (planfile.BACKOFF, "a", NOW + 600)
    assert why.text == f"backoff of a until {int(NOW + 600)}"


def test_several_machinetypes_reasons_are_one_reason_with_parts(conf):
    census = {"a": Census(last_abort_time=NOW - 400), "b": Census(last_abort_time=NOW - 100)}
    (why,) = data(make_plan(conf(2, a="", b=""), free(2), census=census))
    assert why.kind == planfile.BACKOFF
    assert [(p.machinetype, p.until) for p in why.each()] == [("a", NOW + 600),
                                                               ("b", NOW + 900)]
    assert why.text == f"backoff of a until {int(NOW + 600)}; backoff of b until {int(NOW + 900)}"


def test_the_gate_gives_each_reason_its_kind(conf):
    assert {w.kind for w in data(make_plan(conf(2, "draining = yes"), free(2)))} == \
        {planfile.DRAINING}
    assert {w.kind for w in data(make_plan(conf(2), free(2), load=100.0))} == \
        {planfile.OVERLOAD}
    assert {w.kind for w in data(make_plan(conf(3, "max_creations_per_cycle = 1"),
                                           free(3)))} == {planfile.MAX_CREATIONS}
    assert {w.kind for w in data(make_plan(conf(2, shares_={"a": 0}), free(2)))} == \
        {planfile.NO_SHARE}


def test_machinetypes_waiting_for_their_backend_take_no_part_and_say_so(conf):
    config = conf(3, a="", b="")
    plan = planner.plan(config, free(3), {}, load=0.0, now=NOW, daemon_started=LONG_AGO,
                        rng=random.Random(1),
                        waiting={"b": "backend docker unavailable: engine down"})
    assert [c.machinetype for c in plan.creates] == ["a", "a", "a"]
    plan = planner.plan(config, free(3), {}, load=0.0, now=NOW, daemon_started=LONG_AGO,
                        rng=random.Random(1), waiting={"a": "backend fake unavailable: x",
                                                       "b": "backend fake unavailable: x"})
    assert plan.creates == ()
    (why,) = data(plan)
    assert why.kind == planfile.BACKEND_WAITING
    assert why.text == "backend fake unavailable: x (a, b waiting)"
    assert [p.machinetype for p in why.each()] == ["a", "b"]


def test_a_waiting_machinetype_is_added_to_another_reason(conf):
    config = conf(2, a="", b="")
    plan = planner.plan(config, free(2), {"a": Census(last_abort_time=NOW - 400)}, load=0.0,
                        now=NOW, daemon_started=LONG_AGO, rng=random.Random(1),
                        waiting={"b": "backend docker unavailable: engine down"})
    (why,) = data(plan)
    assert why.text == (f"backoff of a until {int(NOW + 600)}; backend docker unavailable: "
                        "engine down (b waiting)")
    assert [p.kind for p in why.each()] == [planfile.BACKOFF, planfile.BACKEND_WAITING]


def test_a_blocked_configuration_creates_nothing_and_every_free_slot_says_why(conf):
    blocked = planfile.IdleReason(planfile.CONFIG_REJECTED, "configuration rejected: x")
    observed = [running(slots(3)[0])] + free(3)[1:]
    plan = planner.plan(conf(3), observed, {}, load=0.0, now=NOW, daemon_started=LONG_AGO,
                        rng=random.Random(1), blocked=blocked,
                        waiting={"a": "backend fake unavailable: x"})
    assert plan.creates == () and [h.name for h in plan.heartbeats] == [slots(3)[0].name]
    assert plan.idle_data() == {s.name: blocked for s in slots(3)[1:]}


def test_counts_are_after_the_destroys_before_the_creations(conf):
    observed = [running(slots(3)[0]), running(slots(3)[1], shutdown_time=int(NOW - 1))] + \
        free(3)[2:]
    plan = make_plan(conf(3), observed)
    assert [d.name for d in plan.destroys] == [slots(3)[1].name] and len(plan.creates) == 2
    assert plan.counts == planner.Counts(1, 3, 1, 3, 1.0)
