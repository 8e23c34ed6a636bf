# SPDX-License-Identifier: BSD-2-Clause
"""Event-driven refill, on the fake backend: Factory.refill finishes the machine
that ended and fills its slot only, from the last cycle's view plus the slots it re-observes;
vac.cycle.watchers starts a watcher per backend, and one that breaks is reported once and
replaced (vacd falls back to cycles meanwhile)."""
from __future__ import annotations

import logging
import threading

from vac.backends.fake import FakeBackend
from vac.backends.watch import Watcher
from vac.cycle.watchers import MessageWatcher, Watchers
from vac.machine.directory import MachineDir

SLOTS = [f"f1-{n:02d}.example.com" for n in range(3)]


def _end(backend, name, clock):
    machines = backend._load()
    machines[name]["run_seconds"] = max(0.0, clock.now - machines[name]["started"])
    machines[name]["message"] = "200 Success"
    backend._save(machines)


def test_refill_before_any_cycle_does_nothing(make_factory):
    factory, backend, clock = make_factory()
    assert factory.refill([SLOTS[0]]) is None


def test_refill_finishes_the_ended_machine_and_fills_only_its_slot(make_factory, paths):
    factory, backend, clock = make_factory(cap=2)
    assert factory.run_cycle().created == SLOTS[:2]        # slot 2 left free by the cap
    first = MachineDir.for_slot(paths, SLOTS[0])
    clock.now += 5
    _end(backend, SLOTS[0], clock)
    report = factory.refill([SLOTS[0]])
    assert report.finished == [SLOTS[0]] and report.created == [SLOTS[0]]
    assert first.finished is not None and first.shutdown_message == "200 Success"
    assert MachineDir.for_slot(paths, SLOTS[0]).path != first.path
    assert MachineDir.for_slot(paths, SLOTS[2]) is None    # the free slot waits for a cycle
    assert SLOTS[1] in backend._load()                      # the other machine untouched


def test_a_refill_sees_what_the_last_one_created(make_factory, paths):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    for _ in range(3):                   # the same slot ends again and again between cycles
        clock.now += 5
        _end(backend, SLOTS[1], clock)
        report = factory.refill([SLOTS[1]])
        assert report.finished == [SLOTS[1]] and report.created == [SLOTS[1]]
    clock.now += 5
    assert factory.refill([SLOTS[1]]).created == []        # still running: nothing to do
    unfinished = [n for n in SLOTS if MachineDir.for_slot(paths, n).finished is None]
    assert unfinished == SLOTS and len(backend._load()) == 3


def test_a_refill_for_an_unknown_or_running_machine_changes_nothing(make_factory):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    clock.now += 5
    assert factory.refill(["elsewhere.example.com"]) is None
    report = factory.refill([SLOTS[2]])
    assert report.created == report.finished == report.destroyed == []


class DyingWatcher(Watcher):
    backend = "fake"

    def loop(self):
        raise ConnectionError("engine closed the stream")


class QuietWatcher(Watcher):
    backend = "fake"

    def loop(self):
        self.stopping.wait()


class Watching(FakeBackend):
    dies = True

    def watch(self, on_end):
        watcher = (DyingWatcher if self.dies else QuietWatcher)(on_end)
        watcher.start()
        return watcher


def test_a_broken_watcher_is_reported_once_and_replaced(make_factory, caplog):
    factory, backend, clock = make_factory(backend_class=Watching)
    factory.run_cycle()
    woken = threading.Event()
    watchers = Watchers(woken.set)
    with caplog.at_level(logging.INFO):
        watchers.ensure(factory.pool)
        watchers.running["fake"].join(5)
        watchers.ensure(factory.pool)          # broken: reported, a new one started
        watchers.running["fake"].join(5)
        watchers.ensure(factory.pool)          # broken again: not reported twice
        Watching.dies = False
        try:
            watchers.running["fake"].join(5)
            watchers.ensure(factory.pool)          # a quiet one starts
            assert watchers.running["fake"].is_alive()
            watchers.ensure(factory.pool)          # and is still alive a cycle later: back
        finally:
            Watching.dies = True
            watchers.stop()
    text = caplog.text
    assert text.count("fake event watcher stopped (ConnectionError: engine closed the "
                      "stream): falling back to cycles") == 1
    assert "fake event watcher is back" in text


def test_reported_names_wake_the_daemon_once_each():
    woken = threading.Event()
    watchers = Watchers(woken.set)
    watchers.on_end("a")
    watchers.on_end("a")
    watchers.on_end("b")
    assert woken.is_set()
    assert watchers.take() == {"a", "b"} and watchers.take() == set()


# A machine that wrote its shutdown_message and keeps running --------------------------------

def _grace(make_factory, tmp_path, seconds):
    factory, backend, clock = make_factory()
    conf = tmp_path / "vac.conf"
    conf.write_text(conf.read_text().replace(
        "fake_run_seconds = 5000", f"fake_run_seconds = 5000\nshutdown_message_grace_seconds"
                                   f" = {seconds}"))
    return factory, backend, clock


def test_a_message_and_no_end_is_taken_at_its_word_after_the_grace(make_factory, tmp_path,
                                                                   paths):
    factory, backend, clock = _grace(make_factory, tmp_path, 30)
    factory.run_cycle()
    d = MachineDir.for_slot(paths, SLOTS[0])
    d.write("joboutputs/shutdown_message", "200 Success", mtime=clock.now)
    watcher = MessageWatcher(lambda: factory.config, lambda name: None, clock=clock)
    ended = []
    watcher.ended = ended.append
    clock.now += 29
    watcher.look(factory.config)
    assert ended == [] and factory.refill([SLOTS[0]]).destroyed == []   # within the grace
    clock.now += 2
    watcher.look(factory.config)
    watcher.look(factory.config)
    assert ended == [SLOTS[0]]                                          # reported once
    report = factory.refill(ended)
    assert report.destroyed == [SLOTS[0]] and report.created == [SLOTS[0]]
    assert d.finished is not None and d.shutdown_message == "200 Success"  # its own message


def test_without_the_option_a_message_and_no_end_runs_on(make_factory, paths):
    factory, backend, clock = make_factory()
    factory.run_cycle()
    d = MachineDir.for_slot(paths, SLOTS[0])
    d.write("joboutputs/shutdown_message", "200 Success", mtime=clock.now)
    clock.now += 4_000                                   # the fake runs 5,000 s
    report = factory.run_cycle()
    assert SLOTS[0] not in report.destroyed and d.finished is None
