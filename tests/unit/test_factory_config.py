# SPDX-License-Identifier: BSD-2-Clause
"""The factory while its configuration is rejected or missing (vac.cycle.configstate): it keeps
cycling, looks after the machines that run, creates nothing, says why in factory-error and
plan.json and in the log, which (through vacd's Repeats filter) has one line per reason; a
fixed file is picked up at the next cycle."""
from __future__ import annotations

import logging
import os
import random
import threading

import pytest

from vac import planfile
from vac.backends.fake import FakeBackend
from vac.config import load
from vac.cycle.backendpool import BackendPool
from vac.cycle.configstate import state_dir_config
from vac.cycle.factory import Factory
from vac.errors import BackendError, ConfigMissing
from vac.machine.directory import MachineDir
from vac.service.journal import Repeats

NAMES = [f"f1-{n:02d}.example.com" for n in range(3)]
MISSING = "not configured yet: edit /etc/vac.conf (it does not exist)"


def end_soon(fake, name, message="200 Success"):
    """The fake machine in this slot ends within 30 s of its start, with this message."""
    machines = fake._load()
    machines[name] = {**machines[name], "run_seconds": 30, "message": message}
    fake._save(machines)


def errors_logged(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


class Journal:
    """The log as vacd writes it: through the Repeats filter, told of each cycle's start, on
    the factory's clock (a line stops holding after a quiet time, which the fake clock makes
    pass between cycles)."""

    def __init__(self, caplog, clock):
        self.caplog = caplog
        self.repeats = Repeats(clock=clock)
        caplog.handler.addFilter(self.repeats)
        caplog.set_level(logging.INFO)

    def cycle(self, factory, clock, seconds=60.0):
        for text in self.repeats.next_cycle():
            logging.getLogger("vac.daemon").info("no longer reported: %s", text)
        clock.now += seconds
        report = factory.run_cycle()
        clock.now += 1.0                # the next cycle begins a moment after this one's work
        return report

    def errors(self):
        return errors_logged(self.caplog)

    def close(self):
        self.caplog.handler.removeFilter(self.repeats)


@pytest.fixture
def journal_on(caplog):
    """Journal(caplog, clock) for one test: its filter leaves the capture handler with the
    test (pytest keeps that handler for the whole session, and a Repeats left on it would
    swallow every later test's repeated lines)."""
    made = []

    def make(clock):
        made.append(Journal(caplog, clock))
        return made[-1]
    yield make
    for journal in made:
        journal.close()


@pytest.fixture
def site(tmp_path, paths, host, make_factory):
    """A factory with 3 running machines (fake_run_seconds 5000) whose vac.conf can break."""
    factory, fake, clock = make_factory()
    assert factory.run_cycle().created == NAMES
    conf = tmp_path / "vac.conf"
    return factory, fake, clock, conf, conf.read_text()


def test_a_rejected_configuration_keeps_managing_and_creates_nothing(site, paths, caplog,
                                                                      journal_on):
    factory, fake, clock, conf, good = site
    conf.write_text(good.replace("machine_model = fake", "machine_model = dokcer"))
    ended = NAMES[0]
    end_soon(fake, ended)
    beats = []
    journal = journal_on(clock)
    for _ in range(4):
        report = journal.cycle(factory, clock)
        assert report.created == [] and report.config_state == "rejected"
        assert "dokcer" in report.config_error
        beats.append(MachineDir.for_slot(paths, NAMES[1]).heartbeat_time)
        record = planfile.read(paths.plan)
        assert record.config_state == planfile.CONFIG_REJECTED_STATE
        assert record.idle[ended].kind == planfile.CONFIG_REJECTED
        error = open(paths.factory_error).read()
        assert error.startswith("configuration rejected: ") and "dokcer" in error
    assert MachineDir.for_slot(paths, ended).finished is not None    # finished meanwhile
    assert beats == sorted(set(beats)) and len(beats) == 4           # heartbeated each cycle
    assert len(journal.errors()) == 1                                # one line, not four
    assert "dokcer" in journal.errors()[0] and "no longer reported" not in caplog.text
    # Another mistake is another reason: one more line.
    conf.write_text(good.replace("target_share = 1", "target_share = lots"))
    journal.cycle(factory, clock)
    journal.cycle(factory, clock)
    assert len(journal.errors()) == 2
    # Fixed: picked up at the next cycle, factory-error gone, the free slot filled.
    conf.write_text(good)
    report = journal.cycle(factory, clock)
    assert report.created == [ended] and report.config_state == "ok"
    assert not os.path.exists(paths.factory_error)
    assert planfile.read(paths.plan).config_state == planfile.CONFIG_OK
    journal.cycle(factory, clock)
    assert "no longer reported: configuration rejected" in caplog.text
    assert len(journal.errors()) == 2


def test_warnings_are_logged_when_they_appear_and_when_they_clear(site, caplog, journal_on):
    factory, fake, clock, conf, good = site
    warned = good.replace("[machinetype alpha]", "[machinetype alpha]\nheartbeat_seconds = 60")
    conf.write_text(warned)
    journal = journal_on(clock)
    for _ in range(3):
        journal.cycle(factory, clock)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "heartbeat_seconds" in r.getMessage()]
    assert factory.config.warnings and len(warnings) == 1
    conf.write_text(good)
    journal.cycle(factory, clock)
    journal.cycle(factory, clock)
    cleared = [r.getMessage() for r in caplog.records if "no longer reported" in r.getMessage()]
    assert len(cleared) == 1 and "heartbeat_seconds" in cleared[0]


def test_with_no_configuration_ever_the_machines_on_disk_are_looked_after(site, paths, host,
                                                                          caplog, journal_on):
    """A vacd started with no vac.conf while machines of an earlier one run: it manages them
    from the state directory (slots and models on disk) and creates nothing."""
    _, fake, clock, _, _ = site
    end_soon(fake, NAMES[2])

    def missing():
        raise ConfigMissing("/etc/vac.conf", MISSING)

    restarted = Factory(missing, BackendPool(fake.settings, {"fake": fake}), clock=clock,
                        loadavg=lambda: (0.0, 0.0, 0.0), rng=random.Random(1), host=host)
    before = MachineDir.for_slot(paths, NAMES[0]).heartbeat_time
    journal = journal_on(clock)
    for _ in range(3):
        report = journal.cycle(restarted, clock)
        assert report.created == [] and report.config_state == "missing"
        assert open(paths.factory_error).read() == MISSING + "\n"
    assert restarted.config is None and restarted.pool is not None
    assert MachineDir.for_slot(paths, NAMES[0]).heartbeat_time > before
    ended = MachineDir.for_slot(paths, NAMES[2])
    assert ended.finished is not None
    # Its APEL record waits for a configuration (site, machinetype) instead of being dropped.
    assert os.listdir(os.path.join(paths.state_dir, "apel-pending")) == [
        os.path.basename(ended.path)]
    assert sorted(fake._load()) == NAMES[:2]                      # nothing taken for a zombie
    record = planfile.read(paths.plan)
    assert record.config_state == planfile.CONFIG_MISSING and record.config_error == MISSING
    assert record.idle[NAMES[2]].kind == planfile.NOT_CONFIGURED
    assert record.counts[0] == 2
    assert journal.errors() == [f"configuration missing, no machines will be created "
                                     f"(running machines are still managed): {MISSING}"]


def test_a_factory_with_no_configuration_and_no_pool_still_cycles(tmp_path, host):
    """The daemon's case: no pool given, no configuration, an empty state directory."""
    state = str(tmp_path / "fresh")

    def missing():
        raise ConfigMissing("/etc/vac.conf", MISSING)

    factory = Factory(missing, state_dir=state, host=host, loadavg=lambda: (0.0, 0.0, 0.0))
    for _ in range(2):
        report = factory.run_cycle()
        assert report.created == [] and report.config_state == "missing"
    assert factory.pool is not None
    assert factory.pool.settings.state_dir == state
    record = planfile.read(os.path.join(state, "plan.json"))
    assert record.config_state == "missing" and record.idle == {}   # no slots made up
    assert record.counts == (0, 0, 0, host.processors, 0.0)
    assert os.path.exists(os.path.join(state, "factory-heartbeat"))


def test_a_fixed_file_after_no_configuration_is_picked_up(site, paths, host, tmp_path):
    _, fake, clock, conf, good = site
    state = {"text": None}

    def loader():
        if state["text"] is None:
            raise ConfigMissing("/etc/vac.conf", MISSING)
        return load.build(load.read_raw([str(conf)]), host)

    restarted = Factory(loader, BackendPool(fake.settings, {"fake": fake}), clock=clock,
                        loadavg=lambda: (0.0, 0.0, 0.0), rng=random.Random(1), host=host)
    clock.now += 60
    restarted.run_cycle()
    assert os.path.exists(paths.factory_error)
    end_soon(fake, NAMES[0])
    state["text"] = good
    clock.now += 60
    report = restarted.run_cycle()
    assert report.config_state == "ok" and NAMES[0] in report.finished
    assert report.created == [NAMES[0]]
    assert not os.path.exists(paths.factory_error)
    assert os.listdir(os.path.join(paths.state_dir, "apel-pending")) == []   # settled now


def test_the_state_directory_gives_the_factory_name_and_the_slots(paths, host):
    for name in ("f7-00.example.org", "f7-11.example.org", ".tmp-x"):
        open(os.path.join(paths.slots, name), "w").close()
    config = state_dir_config(paths.state_dir, host)
    assert config.settings.factory_name == "f7.example.org"
    assert config.settings.host_processors == 12 and config.machinetypes == {}
    assert config.settings.version_logger == 0
    empty = state_dir_config(str(paths.state_dir) + "-empty", host)
    assert empty.settings.factory_name == "unconfigured.invalid"
    assert empty.settings.host_processors == host.processors


def test_a_refill_writes_the_record(site, paths):
    factory, fake, clock, _, _ = site
    clock.now += 60
    factory.run_cycle()
    first = planfile.read(paths.plan)
    end_soon(fake, NAMES[1])
    clock.now += 5
    report = factory.refill([NAMES[1]])
    assert report.finished == [NAMES[1]] and report.created == [NAMES[1]]
    record = planfile.read(paths.plan)
    assert record.time == int(clock.now) > first.time
    # counts as the original wrote them: after the destroys, before the creations
    assert first.counts[0] == 3 and record.counts[0] == 2
    # A refill that cannot create (the machinetype backs off after an abort) records why.
    end_soon(fake, NAMES[2], "300 No more work")
    clock.now += 5
    report = factory.refill([NAMES[2]])
    assert report.finished == [NAMES[2]] and report.created == []
    record = planfile.read(paths.plan)
    assert record.idle[NAMES[2]].kind == planfile.BACKOFF
    assert record.idle[NAMES[2]].machinetype == "alpha" and record.idle[NAMES[2]].until
    assert record.counts[0] == 2       # the refilled one, and the one still running


class FailingAtOnce(FakeBackend):
    """Takes 3 creations at once; each fails once all three are under way."""

    under_way = threading.Barrier(3)

    def parallel_creations(self) -> int:
        return 3

    def create(self, spec):
        self.under_way.wait(timeout=300)
        raise BackendError(self.NAME, "registry refused the pull", spec.name)


def test_parallel_failures_of_one_machinetype_make_one_log_line(make_factory, paths, caplog):
    factory, fake, clock = make_factory(backend_class=FailingAtOnce)
    with caplog.at_level(logging.INFO):
        report = factory.run_cycle()
    assert report.created == [] and sorted(report.failed) == NAMES   # all were under way
    assert {r.kind for r in report.reasons.values()} == {planfile.CREATION_FAILED}
    assert errors_logged(caplog) == [
        f"alpha: creation failed: fake {NAMES[0]}: registry refused the pull "
        "(2 more slots of alpha left idle this cycle)"]
    for name in NAMES:
        assert MachineDir.for_slot(paths, name).disk_state().value == "Failed"
