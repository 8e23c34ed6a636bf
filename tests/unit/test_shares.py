# SPDX-License-Identifier: BSD-2-Clause
"""Shares: outcome codes, fizzle synthesis, census counting and merging, eligibility, order."""
from __future__ import annotations

import random

import pytest

from vac import planfile
from vac.cycle import shares
from vac.machine import outcome
from vac.machine.directory import MachineState
from vac.machine.observed import Observed
from vac.machine.outcome import LastOutcome
from vac.machine.slots import make_slots
from vac.space import censusdata
from vac.space.censusdata import Census

NOW = 1_700_000_000.0
SLOTS = make_slots("f1.example.com", 16)

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 16

[machinetype a]
machine_model = fake
target_share = 1
fizzle_seconds = 600
backoff_seconds = 100

[machinetype b]
machine_model = fake
target_share = 3
fizzle_seconds = 600
backoff_seconds = 100
accounting_fqan = /vo/Role=NULL

[machinetype c]
machine_model = fake
target_share = 1
fizzle_seconds = 600
backoff_seconds = 100
accounting_fqan = /vo/Role=NULL

[machinetype z]
machine_model = fake
target_share = 0
"""


@pytest.fixture
def mts(make_config):
    return make_config(CONF).machinetypes


def obs(n, mt="a", state=MachineState.RUNNING, **kw):
    values = dict(created=int(NOW - 7200), started=NOW - 7000, processors=1,
                  last_heartbeat=NOW - 30)
    values.update(kw)
    return Observed(slot=SLOTS[n], machinetype=mt, model="fake", state=state, **values)


# Messages and outcomes --------------------------------------------------------------------

@pytest.mark.parametrize("message, code", [
    ("200 Success", 200), ("300 No HTCondor job to run\n", 300), ("  700 x", 700),
    ("Job done", None), ("", None), (None, None), ("-10 x", None), ("3", None), ("²00 x", None),
])
def test_message_code(message, code):
    assert outcome.message_code(message) == code


@pytest.mark.parametrize("message, abort", [
    ("100 Shutdown time reached", False), ("200 Success", False), ("299 x", False),
    ("300 No PanDA job to run", True), ("400 banned", True), ("500 Missing vdb", True),
    ("600 x", True), ("700 Heartbeat file not created", True), ("done", False), (None, False),
])
def test_codes_from_300_are_aborts(message, abort):
    assert outcome.is_abort(message) is abort


def test_short_run_without_message_is_a_fizzle():
    text = outcome.outcome_message(None, NOW - 250.7, NOW, 600)
    assert text == "300 Vac detects fizzle after 250 seconds"
    assert outcome.is_abort(text)


def test_short_run_with_uncoded_message_is_a_fizzle():
    assert outcome.outcome_message("finished", NOW - 10, NOW, 600).startswith("300 Vac detects")


@pytest.mark.parametrize("message, started, ended, fizzle, expected", [
    ("200 Success", NOW - 10, NOW, 600, "200 Success"),       # coded: kept even if short
    ("300 No work", NOW - 9000, NOW, 600, "300 No work"),
    (None, NOW - 600, NOW, 600, None),                        # ran the full fizzle window
    ("done", NOW - 9000, NOW, 600, "done"),
    (None, None, NOW, 600, None),                             # never started: not a run
    (None, NOW - 10, None, 600, None),
    (None, NOW - 10, NOW, 0, None),                           # fizzle_seconds 0: no rule
])
def test_outcome_message_leaves_other_outcomes_alone(message, started, ended, fizzle,
                                                     expected):
    assert outcome.outcome_message(message, started, ended, fizzle) == expected


# Local census (what the responder reports of this factory) --------------------------------

def test_local_census_counts_running_starting_and_before_fizzle(mts):
    observed = [
        obs(0, "a", processors=2, hs06=20.0),                       # old, running
        obs(1, "a", started=NOW - 100),                             # running, before fizzle
        obs(2, "a", state=MachineState.STARTING, started=None, created=int(NOW - 50)),
        obs(3, "a", state=MachineState.STARTING, started=None, created=int(NOW - 4000)),
        obs(4, "a", last_heartbeat=NOW - 3700),                     # stale heartbeat
        obs(5, "a", state=MachineState.SHUTDOWN, finished=True),
        obs(6, "b", processors=4),
        obs(7, "unconfigured"),
        Observed(slot=SLOTS[8]),
    ]
    census = censusdata.local_census(observed, {}, mts, NOW)
    assert set(census) == set(mts)
    a = census["a"]
    assert a.running_hs06 == pytest.approx(20.0 + 1.0 + 1.0)
    assert a.running_machines == 3 and a.running_processors == 4
    assert a.num_before_fizzle == 2
    assert a.last_abort_time is None and a.shutdown_message is None
    assert census["b"].running_hs06 == 4.0 and census["b"].num_before_fizzle == 0
    assert census["c"] == Census()


def test_last_outcome_abort_is_dated_by_its_message(mts):
    outcomes = {"a": LastOutcome("300 No work", NOW - 50, "f1-03.example.com", NOW - 5000)}
    a = censusdata.local_census([], outcomes, mts, NOW)["a"]
    assert a.last_abort_time == NOW - 50
    assert (a.shutdown_message, a.shutdown_time, a.shutdown_machine) == \
        ("300 No work", NOW - 50, "f1-03.example.com")


def test_last_outcome_success_is_no_abort(mts):
    outcomes = {"a": LastOutcome("200 Success", NOW - 50, "f1-03.example.com", NOW - 5000)}
    a = censusdata.local_census([], outcomes, mts, NOW)["a"]
    assert a.last_abort_time is None and a.shutdown_time == NOW - 50


def test_last_outcome_without_message_after_short_run_is_a_fizzle_abort(mts):
    outcomes = {"a": LastOutcome(None, NOW - 50, "f1-03.example.com", NOW - 170)}
    a = censusdata.local_census([], outcomes, mts, NOW)["a"]
    assert a.shutdown_message == "300 Vac detects fizzle after 120 seconds"
    assert a.last_abort_time == NOW - 50


def test_uncoded_outcome_after_long_run_has_no_time(mts):
    outcomes = {"a": LastOutcome("bye", NOW - 50, "f1-03.example.com", NOW - 5000)}
    a = censusdata.local_census([], outcomes, mts, NOW)["a"]
    assert a.shutdown_message == "bye" and a.shutdown_time is None
    assert a.last_abort_time is None


def test_machine_shut_down_now_counts_before_it_is_finished(mts):
    ending = obs(2, "a", state=MachineState.SHUTDOWN, created=int(NOW - 300),
                 started=NOW - 290, shutdown_message=None)
    outcomes = {"a": LastOutcome("200 Success", NOW - 900, "f1-01.example.com", NOW - 9000,
                                 created=int(NOW - 9100))}
    a = censusdata.local_census([ending], outcomes, mts, NOW)["a"]
    assert a.shutdown_machine == "f1-02.example.com"
    assert a.shutdown_message.startswith("300 Vac detects fizzle after 290")
    assert a.last_abort_time == NOW


def test_an_older_machines_abort_reported_later_is_not_hidden(mts):
    # The original (and this test before) let the most recently created
    # machine's outcome win, so an older pilot's later abort was dropped for good.
    ending = obs(2, "a", state=MachineState.SHUTDOWN, created=int(NOW - 9000),
                 shutdown_message="500 broken", shutdown_message_time=NOW - 20)
    outcomes = {"a": LastOutcome("200 Success", NOW - 60, "f1-01.example.com", NOW - 900,
                                 created=int(NOW - 1000))}
    a = censusdata.local_census([ending], outcomes, mts, NOW)["a"]
    assert a.shutdown_message == "500 broken" and a.last_abort_time == NOW - 20
    assert a.shutdown_machine == "f1-02.example.com"


def test_an_outcome_reported_earlier_does_not_hide_a_later_one(mts):
    ending = obs(2, "a", state=MachineState.SHUTDOWN, created=int(NOW - 900),
                 shutdown_message="500 broken", shutdown_message_time=NOW - 100)
    outcomes = {"a": LastOutcome("200 Success", NOW - 60, "f1-01.example.com", NOW - 9000,
                                 created=int(NOW - 9100))}
    a = censusdata.local_census([ending], outcomes, mts, NOW)["a"]
    assert a.shutdown_message == "200 Success" and a.last_abort_time is None


# Merging replies from the space -----------------------------------------------------------

def status(mt, **kw):
    fields = {"machinetype": mt, "running_hs06": 0.0, "num_before_fizzle": 0,
              "shutdown_message": None, "shutdown_time": None, "shutdown_machine": None}
    fields.update(kw)
    return fields


def test_merge_census_sums_factories_and_keeps_latest_abort():
    merged = censusdata.merge_census([
        status("a", running_hs06=10.0, num_before_fizzle=1, running_machines=2,
               running_processors=2, shutdown_message="300 none", shutdown_time=NOW - 500,
               shutdown_machine="f1-00.example.com"),
        status("a", running_hs06=5.5, running_cpus=3, shutdown_message="700 later",
               shutdown_time=NOW - 100, shutdown_machine="f2-00.example.com"),
        status("a", running_hs06=1.0, shutdown_message="200 Success",
               shutdown_time=NOW - 10, shutdown_machine="f3-00.example.com"),
        status("b", running_hs06=2.0),
    ])
    a = merged["a"]
    assert a.running_hs06 == pytest.approx(16.5)
    assert a.num_before_fizzle == 1 and a.running_machines == 2 and a.running_processors == 5
    assert a.last_abort_time == NOW - 100  # an abort elsewhere counts space-wide
    assert a.shutdown_machine == "f3-00.example.com"
    assert merged["b"].running_hs06 == 2.0


@pytest.mark.parametrize("bad", [
    {"running_hs06": "lots"}, {"running_hs06": float("nan")}, {"running_hs06": -5},
    {"running_hs06": True}, {"num_before_fizzle": [1]}, {"shutdown_time": "yesterday"},
    {"shutdown_message": 300, "shutdown_time": NOW},
])
def test_merge_census_ignores_hostile_fields(bad):
    c = censusdata.merge_census([status("a", **bad)])["a"]
    assert c.running_hs06 == 0.0 and c.num_before_fizzle == 0 and c.last_abort_time is None


def test_merge_census_skips_replies_without_a_machinetype():
    assert censusdata.merge_census([{"running_hs06": 5}, status(""), "junk", status(7)]) == {}


def test_abort_without_time_does_not_count():
    c = censusdata.merge_census([status("a", shutdown_message="300 x")])["a"]
    assert c.last_abort_time is None


def test_status_fields_round_trip(mts):
    outcomes = {"a": LastOutcome("300 No work", NOW - 50, "f1-03.example.com", NOW - 5000)}
    local = censusdata.local_census([obs(0, "a", started=NOW - 10)], outcomes, mts, NOW)
    replies = [dict(censusdata.status_fields(c), machinetype=name) for name, c in local.items()]
    assert censusdata.merge_census(replies) == local


def test_add_census_combines_local_and_remote(mts):
    local = {"a": Census(running_hs06=2.0, last_abort_time=NOW - 500)}
    remote = {"a": Census(running_hs06=3.0, num_before_fizzle=1, last_abort_time=NOW - 50),
              "x": Census(running_hs06=1.0)}
    total = censusdata.add_census(local, remote)
    assert total["a"].running_hs06 == 5.0 and total["a"].num_before_fizzle == 1
    assert total["a"].last_abort_time == NOW - 50 and "x" in total


# Eligibility (below the target share, not in backoff) -------------------------------------

def test_backoff_after_abort(mts):
    c = Census(last_abort_time=NOW - 50)
    reason = shares.ineligible_reason(mts["a"], c, NOW, None)
    assert reason.text == f"backoff of a until {int(NOW + 50)}"
    assert (reason.kind, reason.machinetype, reason.until, reason.factory) == \
        (planfile.BACKOFF, "a", NOW + 50, None)
    assert shares.ineligible_reason(mts["a"], c, NOW + 51, None) is None


def test_backoff_extends_by_fizzle_while_any_machine_is_before_fizzle(mts):
    c = Census(last_abort_time=NOW - 150, num_before_fizzle=1)
    assert shares.embargo_until(mts["a"], c) == NOW - 150 + 100 + 600
    assert "backoff of a" in shares.ineligible_reason(mts["a"], c, NOW, None).text
    assert shares.ineligible_reason(mts["a"], c, NOW + 551, None) is None


def test_zero_share_and_late_min_wallclock_are_ineligible(mts):
    none = shares.ineligible_reason(mts["z"], Census(), NOW, None)
    assert "no target_share" in none.text and none.kind == planfile.NO_SHARE
    late = int(NOW + 86400)
    wall = shares.ineligible_reason(mts["a"], Census(), NOW, late)
    assert "shutdown_time" in wall.text and wall.kind == planfile.MIN_WALLCLOCK
    assert shares.ineligible_reason(mts["a"], Census(), NOW, late + 1) is None


def test_a_backoff_caused_elsewhere_names_the_factory(mts):
    c = Census(last_abort_time=NOW - 50, last_abort_factory="f3.example.com")
    reason = shares.ineligible_reason(mts["a"], c, NOW, None)
    assert reason.factory == "f3.example.com" and reason.until == NOW + 50
    assert reason.text.startswith(f"backoff of a until {int(NOW + 50)}: abort on f3 at ")


def test_order_favours_starved_group_then_own_score(mts):
    # a (group a): 10/1 = 10. b and c share the /vo group: b 3/3 = 1, c 20/1 = 20 -> group 21
    census = {"a": Census(running_hs06=10.0), "b": Census(running_hs06=3.0),
              "c": Census(running_hs06=20.0)}
    book = shares.Shares(mts, census, random.Random(0))
    ordered, reasons = book.ordered(NOW, None)
    assert [mt.name for mt in ordered] == ["a", "b", "c"]
    assert reasons == []  # z has no share and takes no part
    assert book.score("b") == (21.0, 1.0)


def test_planned_machines_move_the_scores(mts):
    book = shares.Shares(mts, {"b": Census(running_hs06=3.0)}, random.Random(0))
    assert [mt.name for mt in book.ordered(NOW, None)[0]] == ["a", "c", "b"]
    book.planned("a", 2)  # group a now 2.0, group /vo still 1.0
    assert book.census("a").num_before_fizzle == 1 and book.census("a").running_hs06 == 2.0
    assert [mt.name for mt in book.ordered(NOW, None)[0]] == ["c", "b", "a"]


def test_random_tiebreak_comes_from_the_injected_rng(mts):
    firsts = {shares.Shares(mts, {}, random.Random(seed)).ordered(NOW, None)[0][0].name
              for seed in range(40)}
    assert firsts == {"a", "b", "c"}  # all at score 0: only the tiebreak decides
    same = [shares.Shares(mts, {}, random.Random(7)).ordered(NOW, None)[0][0].name
            for _ in range(3)]
    assert len(set(same)) == 1


def test_ended_machine_leaves_census_and_records_abort(mts):
    book = shares.Shares(mts, {"a": Census(running_hs06=3.0, num_before_fizzle=1)},
                         random.Random(0))
    book.ended("a", (1.0, 1, True), NOW)
    c = book.census("a")
    assert c.running_hs06 == 2.0 and c.num_before_fizzle == 0 and c.last_abort_time == NOW
    assert "backoff of a" in book.ordered(NOW + 1, None)[1][0].text


# Superslots ------------------------------------------------------------------------------

def test_choose_new_superslot_gets_largest_machine(make_config):
    mt = make_config(CONF.replace("target_share = 1\nfizzle",
                                  "target_share = 1\nmax_processors = 3\nfizzle", 1)
                     ).machinetypes["a"]
    choice, why = shares.choose([mt], [], free=10, per_superslot=4, now=NOW)
    assert (choice.machinetype.name, choice.processors) == ("a", 3)
    assert choice.shutdown_time == int(NOW) + 86400 and why == ""


def test_choose_fills_incomplete_superslot_first(make_config):
    mt = make_config(CONF.replace("target_share = 1\nfizzle", "target_share = 1\n"
                                  "max_processors = 4\nmin_wallclock_seconds = 1000\nfizzle", 1)
                     ).machinetypes["a"]
    when = int(NOW) + 5000
    choice, _ = shares.choose([mt], [(when, 3)], free=10, per_superslot=4, now=NOW)
    assert (choice.processors, choice.shutdown_time) == (1, when)


def test_choose_reserves_for_incomplete_superslots_even_if_nothing_fits(mts):
    # default min_wallclock = max_wallclock: an older superslot cannot be joined
    when = int(NOW) + 5000
    choice, why = shares.choose([mts["a"]], [(when, 1)], free=3, per_superslot=4, now=NOW)
    assert choice is None
    assert why.startswith("nothing fits: 0 free processors after 3 reserved")
    choice, _ = shares.choose([mts["a"]], [(when, 1)], free=4, per_superslot=4, now=NOW)
    assert choice.processors == 1 and choice.shutdown_time == int(NOW) + 86400
