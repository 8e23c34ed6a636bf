# SPDX-License-Identifier: BSD-2-Clause
"""Finishing in one order (vac.cycle.finishing): stop a machine the factory ends, collect its
last state, record its end, then destroy it once. On the fake backend, with every backend
call recorded and checked against what is on disk at that moment."""
from __future__ import annotations

import os

import pytest
from fakeclock import Clock
from fakefactory import factory_over

from vac.backends.fake import FakeBackend
from vac.config import load
from vac.cycle.finishing import Ending, finish_machine
from vac.errors import BackendError
from vac.machine.directory import MachineDir

CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
overload_per_processor = 100
total_processors = 2

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
fizzle_seconds = 100
backoff_seconds = 1000
max_wallclock_seconds = 5000
fake_run_seconds = {run}
fake_shutdown_message = {message}
"""
OOM = "700 Vac: container killed by the OOM killer (memory limit 2048 MiB)"
NAMES = ["f1-00.example.com", "f1-01.example.com"]


class RecordingBackend(FakeBackend):
    """The fake backend, noting each call and what the machine directory held then."""

    def __init__(self, settings, clock):
        super().__init__(settings, clock=clock)
        self.calls = []
        self.oom = set()            # machines whose collect finds an OOM kill
        self.failing_destroy = False

    def _note(self, op, name, directory):
        self.calls.append((op, name, _disk(directory)))

    def stop(self, name, directory):
        self._note("stop", name, directory)

    def collect(self, name, directory):
        self._note("collect", name, directory)
        final = super().collect(name, directory)
        if name in self.oom:     # as the Docker backend does on OOMKilled
            directory.write_shutdown_message_if_none(OOM)
        return final

    def destroy(self, name, directory):
        self._note("destroy", name, directory)
        if self.failing_destroy and directory is not None:
            raise BackendError("fake", "engine refused the removal", name)
        super().destroy(name, directory)

    def ops(self, name):
        return [op for op, n, _ in self.calls if n == name]

    def seen(self, op, name):
        return [disk for o, n, disk in self.calls if o == op and n == name]


def _disk(directory):
    """What finishing has recorded so far of a machine."""
    if directory is None:
        return None
    finishes = os.path.join(os.path.dirname(os.path.dirname(directory.path)), "finishes",
                            directory.machinetype)
    return {"message": directory.shutdown_message, "finished": directory.exists("finished"),
            "finishes": os.path.exists(finishes), "heartbeat": directory.read("heartbeat")}


@pytest.fixture
def factory(tmp_path, paths, host):
    class World:
        def __init__(self):
            self.clock = Clock()
            self.conf = tmp_path / "vac.conf"
            self.write()
            settings = self.load().settings
            self.backend = RecordingBackend(settings, self.clock)
            self.factory = factory_over(self.load, self.backend, self.clock, settings)

        def write(self, run=100_000, message="200 Success"):
            user_data = tmp_path / "user_data"
            user_data.write_text("#!/bin/sh\n")
            self.conf.write_text(CONF.format(state=paths.state_dir, user_data=user_data,
                                             run=run, message=message))

        def load(self):
            return load.build(load.read_raw([str(self.conf)]), host)

        def cycle(self, advance=0.0):
            self.clock.now += advance
            return self.factory.run_cycle()

        def dir(self, name):
            return MachineDir.for_slot(paths, name)

    return World()


def test_a_machine_past_its_wall_time_is_stopped_collected_recorded_then_destroyed_once(
        factory):
    factory.cycle()
    first = {n: factory.dir(n).path for n in NAMES}
    report = factory.cycle(advance=5001)
    assert sorted(report.destroyed) == NAMES and sorted(report.finished) == NAMES
    for name in NAMES:
        assert factory.backend.ops(name) == ["stop", "collect", "destroy"]
        collected, = factory.backend.seen("collect", name)
        assert collected["message"] is None and not collected["finished"]
        destroyed, = factory.backend.seen("destroy", name)
        assert destroyed["message"] == "100 Shutdown time reached"
        assert destroyed["finished"] and destroyed["finishes"]
        assert MachineDir(first[name]).finished is not None
    factory.cycle(advance=10)       # the next cycle destroys none of them again
    assert [factory.backend.ops(n).count("destroy") for n in NAMES] == [1, 1]


def test_a_machine_that_ended_by_itself_is_collected_recorded_then_destroyed(factory):
    factory.write(run=200)
    factory.cycle()
    report = factory.cycle(advance=300)
    assert sorted(report.finished) == NAMES and report.destroyed == []
    for name in NAMES:
        assert factory.backend.ops(name) == ["collect", "destroy"]      # no stop
        destroyed, = factory.backend.seen("destroy", name)
        assert destroyed["message"] == "200 Success" and destroyed["finished"]
        assert destroyed["heartbeat"].startswith("100")   # its final CPU seconds


def test_an_oom_kill_found_by_collect_wins_over_the_factorys_message(factory):
    # The machine was seen running, past its wall time; by the time it is finished its
    # backend's final look finds an OOM kill: that is its outcome, not "shutdown time".
    factory.cycle()
    factory.backend.oom.add(NAMES[0])
    factory.cycle(advance=5001)
    assert factory.backend.ops(NAMES[0]) == ["stop", "collect", "destroy"]
    first = factory.backend.seen("destroy", NAMES[0])[0]
    assert first["message"] == OOM
    assert factory.backend.seen("destroy", NAMES[1])[0]["message"] == \
        "100 Shutdown time reached"


def test_a_failed_destroy_is_an_error_of_a_machine_recorded_as_finished(factory):
    factory.cycle()
    old = factory.dir(NAMES[0]).path
    factory.backend.failing_destroy = True
    report = factory.cycle(advance=5001)
    assert report.destroyed == [] and sorted(report.finished) == NAMES
    assert any("destroy failed" in e and "engine refused" in e for e in report.errors)
    assert MachineDir(old).finished is not None
    assert MachineDir(old).shutdown_message == "100 Shutdown time reached"
    assert factory.backend.ops(NAMES[0])[:3] == ["stop", "collect", "destroy"]


def test_finish_machine_without_a_backend_still_records(factory, paths):
    factory.cycle()
    directory = factory.dir(NAMES[0])
    done = finish_machine(paths, directory, None, None, factory.clock.now + 1,
                          Ending("700 Vac: test", "test"))
    assert done.final is None and done.destroy_error is None
    assert directory.finished is not None and directory.shutdown_message == "700 Vac: test"
    assert os.path.exists(paths.finish_record("alpha"))
