# SPDX-License-Identifier: BSD-2-Clause
"""Backoff by the outcome reported last (not the newest machine's), and its log lines.

Pilots race for the last task of a queue: the younger one gets it and ends 200, the older
one then finds nothing and ends 300 inside fizzle_seconds. The 300 is the latest evidence: it
backs the machinetype off, whichever machine was created last, and the log says so.
"""
from __future__ import annotations

import logging
import os

import pytest

from vac import planfile
from vac.backends.fake import FakeBackend
from vac.cycle.backofflog import BackoffLog, backoffs
from vac.machine.directory import MachineDir
from vac.machine.finishes import last_outcome, update_finishes
from vac.space.censusdata import Census, merge_census

SLOTS = ["f1-00.example.com", "f1-01.example.com", "f1-02.example.com"]
LOGGER = "vac.cycle.backofflog"


class Pilots(FakeBackend):
    """Fake pilots that write their shutdown_message when they end, dated then (as a real
    payload does), so the order of their reports is the order they ended in."""

    def status(self, name, directory):
        machine = self._load().get(name)
        if machine and directory is not None and machine.get("message"):
            end = machine["started"] + machine["run_seconds"]
            if self.clock() >= end:
                directory.write_shutdown_message_if_none(machine["message"], when=end)
        return super().status(name, directory)

    def ends(self, name, at, message):
        machines = self._load()
        machines[name].update(run_seconds=at - machines[name]["started"], message=message)
        self._save(machines)


@pytest.fixture
def race(make_factory, paths):
    """Three pilots, created 2 s apart (one creation a cycle); the last one runs on."""
    factory, backend, clock = make_factory(cap=1, backend_class=Pilots)
    for _ in SLOTS:
        assert len(factory.run_cycle().created) == 1
        clock.now += 2
    created = [MachineDir.for_slot(paths, s).created for s in SLOTS]
    assert created == sorted(created) and len(set(created)) == 3
    return factory, backend, clock


def _reasons(factory, paths):
    record = planfile.read(paths.plan)
    return {name: r.kind for name, r in record.idle.items()} if record else {}


def test_an_older_pilots_abort_after_a_younger_ones_success_backs_off(race, paths, caplog):
    factory, backend, clock = race
    older, younger = SLOTS[0], SLOTS[1]
    t = clock.now
    backend.ends(younger, t + 5, "200 Success")        # got the last task
    backend.ends(older, t + 8, "300 Nothing to do")    # then found the queue empty
    clock.now = t + 6
    report = factory.run_cycle()                        # the younger one is finished first
    assert report.finished == [younger]
    clock.now = t + 10
    with caplog.at_level(logging.INFO, logger=LOGGER):
        report = factory.run_cycle()
    assert report.finished == [older] and report.created == []   # neither slot refilled
    outcome = last_outcome(paths, "alpha")
    assert outcome.machine == older and outcome.message == "300 Nothing to do"
    started = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(started) == 1 and started[0].startswith("backoff of alpha starts: 300 Nothing "
                                                       f"to do from {older} on f1.example.com")
    # backoff_seconds after the abort, and fizzle_seconds (600) more: the third pilot is
    # still before fizzle.
    assert started[0].endswith(f"({int(t + 8 + 1000 + 600)})")
    clock.now = t + 500
    report = factory.run_cycle()
    assert report.created == []
    assert set(_reasons(factory, paths).values()) == {planfile.BACKOFF}


def test_both_pilots_ending_in_one_cycle_back_off_the_same(race, paths):
    factory, backend, clock = race
    t = clock.now
    backend.ends(SLOTS[1], t + 5, "200 Success")
    backend.ends(SLOTS[0], t + 8, "300 Nothing to do")
    clock.now = t + 10
    report = factory.run_cycle()
    assert sorted(report.finished) == SLOTS[:2] and report.created == []
    assert last_outcome(paths, "alpha").machine == SLOTS[0]


def test_a_success_reported_after_the_abort_lets_the_slots_refill(race, paths):
    factory, backend, clock = race
    t = clock.now
    backend.ends(SLOTS[1], t + 5, "300 Nothing to do")
    backend.ends(SLOTS[0], t + 8, "200 Success")       # the latest evidence: work was there
    clock.now = t + 10
    report = factory.run_cycle()
    assert sorted(report.finished) == SLOTS[:2] and len(report.created) == 1
    assert last_outcome(paths, "alpha").machine == SLOTS[0]


def test_the_end_of_a_backoff_is_logged_once(race, caplog):
    factory, backend, clock = race
    t = clock.now
    backend.ends(SLOTS[0], t + 8, "300 Nothing to do")
    clock.now = t + 10
    factory.run_cycle()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        for step in (100, 2000, 2100):
            clock.now = t + step
            factory.run_cycle()
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and lines[0].startswith("backoff of alpha ends")
    assert SLOTS[0] in lines[0]


# finishes/<machinetype> on disk ----------------------------------------------------------

def _finished(paths, created, slot, message, told, finished):
    d = MachineDir.create(paths, created, "alpha", slot)
    d.write("joboutputs/shutdown_message", message, mtime=told)
    d.write("finished", "", mtime=finished)
    return d


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_finishes_names_the_outcome_reported_last_whatever_the_order(paths, order):
    dirs = [_finished(paths, 1000, SLOTS[0], "300 Nothing to do", 1500, 1600),
            _finished(paths, 1100, SLOTS[1], "200 Success", 1400, 1600)]
    for i in order:
        update_finishes(paths, dirs[i])
    assert open(paths.finish_record("alpha")).read() == f"1000 alpha {SLOTS[0]}"
    outcome = last_outcome(paths, "alpha")
    assert outcome.time == 1500 and outcome.message == "300 Nothing to do"


def test_a_message_dated_ahead_counts_from_when_the_machine_finished(paths):
    ahead = _finished(paths, 1000, SLOTS[0], "200 Success", 9_999_999_999, 1600)
    later = _finished(paths, 1100, SLOTS[1], "300 Nothing to do", 1700, 1800)
    update_finishes(paths, ahead)
    assert last_outcome(paths, "alpha").time == 1600
    update_finishes(paths, later)
    assert last_outcome(paths, "alpha").machine == SLOTS[1]


def test_a_record_naming_a_machine_that_has_gone_is_replaced(paths):
    os.makedirs(paths.finishes, exist_ok=True)
    with open(paths.finish_record("alpha"), "w") as f:
        f.write(f"5000 alpha {SLOTS[2]}")
    update_finishes(paths, _finished(paths, 1000, SLOTS[0], "200 Success", 1500, 1600))
    assert last_outcome(paths, "alpha").machine == SLOTS[0]


# The log lines -----------------------------------------------------------------------------

def test_a_remote_abort_names_its_factory_machine_and_message(make_config):
    config = make_config("""
        [settings]
        vac_space = vac01.example.com
        factory_name = f1.example.com
        enable_fake_backend = true

        [machinetype alpha]
        machine_model = fake
        target_share = 1
        backoff_seconds = 1000
        """)
    census = merge_census([
        {"machinetype": "alpha", "factory": "f2.example.com", "shutdown_message":
         "500 Broken\x1b[2J site", "shutdown_time": 1000, "shutdown_machine": "f2-03.x"},
        {"machinetype": "alpha", "factory": "f3.example.com", "shutdown_message":
         "200 Success", "shutdown_time": 1100, "shutdown_machine": "f3-01.x"}])
    found = backoffs(config.machinetypes, census, 1500, "f1.example.com")["alpha"]
    assert (found.factory, found.machine, found.until) == ("f2.example.com", "f2-03.x", 2000)
    log = BackoffLog()
    (line,) = log.update(config.machinetypes, census, 1500, "f1.example.com")
    assert "500 Broken?[2J site from f2-03.x on f2.example.com" in line and "\x1b" not in line
    assert log.update(config.machinetypes, census, 1600, "f1.example.com") == []
    (ended,) = log.update(config.machinetypes, census, 2001, "f1.example.com")
    assert ended.startswith("backoff of alpha ends")
    assert log.update(config.machinetypes, {"alpha": Census()}, 2002, "f1.example.com") == []
