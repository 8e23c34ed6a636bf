# SPDX-License-Identifier: BSD-2-Clause
"""The factory cycle end to end on the fake backend: create, heartbeat, finish, back off."""
from __future__ import annotations

import logging
import os

import pytest
from fakeclock import Clock
from fakefactory import factory_over

from vac import planfile
from vac.backends.fake import FakeBackend
from vac.config import load
from vac.errors import ConfigError
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.space.replies import machine_body

BASE = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
overload_per_processor = 100
{extra_settings}

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
fizzle_seconds = 100
backoff_seconds = 1000
max_wallclock_seconds = 5000
fake_run_seconds = {run}
fake_shutdown_message = {message}
{extra_alpha}
"""


@pytest.fixture
def world(tmp_path, paths, host):
    """A factory on the fake backend whose config text a test can rewrite between cycles."""

    class World:
        def __init__(self):
            self.clock = Clock()
            self.conf = tmp_path / "vac.conf"
            self.write()
            self.pool = None
            self.factory = None
            self.fake = None
            self.start()

        def write(self, run=1000, message="200 Success", extra_settings="", extra_alpha="",
                  text=None):
            template = tmp_path / "user_data"
            template.write_text("#!/bin/sh\n# ##user_data_machine_hostname## "
                                "##user_data_uuid## ##user_data_nothing##\n")
            body = text or BASE.format(run=run, message=message, extra_settings=extra_settings,
                                       extra_alpha=extra_alpha, user_data=template)
            body = body.replace("[settings]", f"[settings]\nstate_dir = {paths.state_dir}", 1)
            self.conf.write_text(body)

        def load(self):
            return load.build(load.read_raw([str(self.conf)]), host)

        def start(self):
            settings = self.load().settings
            self.fake = FakeBackend(settings, clock=self.clock)
            self.factory = factory_over(self.load, self.fake, self.clock, settings)
            self.pool = self.factory.pool

        def cycle(self, advance=0.0):
            self.clock.now += advance
            return self.factory.run_cycle()

        def dir(self, name):
            return MachineDir.for_slot(paths, name)

    return World()


def names(n):
    return [f"f1-{i:02d}.example.com" for i in range(n)]


def test_one_cycle_fills_every_slot(world, paths):
    report = world.cycle()
    assert sorted(report.created) == names(4)
    for name in names(4):
        d = world.dir(name)
        assert d is not None and d.started == pytest.approx(world.clock.now, abs=1)
        assert d.read("jobfeatures/allocated_cpu").strip() == "1"
        assert d.read("heartbeat").startswith("0.0")
        assert read_slot_record(paths, name).model == "fake"
        job_id = d.read("jobfeatures/job_id").strip()
        assert d.read("user_data") == f"#!/bin/sh\n# {name} {job_id} \n"
    assert not os.path.exists(paths.factory_error)


def test_heartbeat_records_cpu_seconds(world):
    world.cycle()
    world.cycle(advance=100)
    d = world.dir(names(1)[0])
    cpu, percent = d.read("heartbeat").split()
    assert float(cpu) == pytest.approx(50.0)  # fake_cpu_per_second 0.5 for 100 s
    assert float(percent) == pytest.approx(50.0)


def test_finished_machine_is_recorded_once_and_slot_refilled(world, paths):
    world.write(run=200)
    world.cycle()
    first = world.dir(names(1)[0])
    report = world.cycle(advance=300)
    assert sorted(report.finished) == names(4)
    assert first.finished is not None
    assert first.shutdown_message == "200 Success"
    assert sorted(report.created) == names(4)  # refilled in the same cycle
    again = world.cycle(advance=1)
    assert again.finished == []


def test_finishes_names_most_recent_machine(world, paths):
    world.write(run=200)
    world.cycle()
    world.cycle(advance=300)
    created, machinetype, name = open(paths.finish_record("alpha")).read().split()
    assert machinetype == "alpha"
    assert int(created) == int(world.clock.now - 300)


def test_config_error_keeps_managing_but_creates_nothing(world, paths):
    world.write(run=200)
    world.cycle()
    world.write(text="[settings]\nvac_space = \n")
    report = world.cycle(advance=300)
    assert report.config_error
    assert sorted(report.finished) == names(4)  # still managed with the last good config
    assert report.created == []


def test_config_error_on_first_cycle_does_nothing(world):
    world.write(text="[machinetype x]\n")
    with pytest.raises(ConfigError):
        world.load()
    report = world.cycle()
    assert report.config_error and report.created == []


def test_failed_creation_writes_factory_error_and_backs_off(world, paths, caplog):
    world.write(extra_alpha="fake_create_error = image not found")
    with caplog.at_level(logging.INFO):
        report = world.cycle()
    # The first failure stops the machinetype's other creations of this cycle: one error,
    # one log line, the failed machine finished at once (Failed, never Starting).
    assert report.created == [] and len(report.errors) == 1
    assert "image not found" in open(paths.factory_error).read()
    failed = world.dir(names(1)[0])
    assert failed.disk_state() is MachineState.FAILED
    assert failed.shutdown_message.startswith("700 Vac: creation failed")
    assert report.reasons[names(1)[0]].kind == planfile.CREATION_FAILED
    for name in names(4)[1:]:
        assert world.dir(name) is None
        assert report.reasons[name].kind == planfile.DEFERRED
        assert report.idle[name] == ("creation of alpha deferred: fake f1-00.example.com: "
                                     "image not found")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["alpha: creation failed: fake f1-00.example.com: image not found "
                      "(3 more slots of alpha left idle this cycle)"]
    assert "did not finish" not in caplog.text
    body = machine_body(failed, "fake")              # what VacQuery tells the space
    assert body["state"] == "Failed" and body["shutdown_message"].startswith("700 Vac")
    record = planfile.read(paths.plan)
    assert record.machine_errors[names(1)[0]]["count"] == 1
    assert record.machine_errors[names(1)[0]]["machine"] == os.path.basename(failed.path)
    world.write()
    report = world.cycle(advance=10)
    assert report.finished == [] and report.created == []  # backoff_seconds = 1000
    assert any("backoff" in r for r in report.idle.values())
    assert planfile.read(paths.plan).machine_errors[names(1)[0]]["count"] == 1
    assert "did not finish" not in caplog.text
    report = world.cycle(advance=1100)
    assert sorted(report.created) == names(4)
    assert not os.path.exists(paths.factory_error)


def test_machine_past_shutdown_time_is_destroyed(world):
    world.write(run=100000)
    world.cycle()
    report = world.cycle(advance=5001)
    assert sorted(report.destroyed) == names(4)
    assert sorted(report.finished) == names(4)
    assert world.fake.destroyed


def test_fizzle_without_message_backs_off(world):
    world.write(run=20, message="")
    world.cycle()
    report = world.cycle(advance=30)
    assert sorted(report.finished) == names(4)
    assert world.dir(names(1)[0]).shutdown_message.startswith("300")
    assert report.created == []


def test_unavailable_backend_leaves_machines_alone(world):
    world.write(run=200)
    world.cycle()
    world.fake.available = False
    report = world.cycle(advance=300)
    assert report.finished == [] and report.destroyed == [] and report.created == []
    assert world.dir(names(1)[0]).finished is None
    world.fake.available = True
    report = world.cycle(advance=1)
    assert sorted(report.finished) == names(4)


def test_zombie_without_directory_is_destroyed(world):
    world.cycle()
    d = world.dir(names(1)[0])
    import shutil

    shutil.rmtree(d.path)
    report = world.cycle(advance=1)
    assert names(1)[0] in report.zombies


def test_restarted_factory_adopts_running_machines(world):
    world.cycle()
    world.start()  # a new vacd: new Factory, new backend object, same state on disk
    report = world.cycle(advance=10)
    assert report.created == [] and report.destroyed == [] and report.zombies == []


def test_expired_directories_are_removed(world, paths):
    world.write(run=200, extra_alpha="machines_dir_days = 1")
    world.cycle()
    old = world.dir(names(1)[0]).path
    world.cycle(advance=300)
    assert os.path.isdir(old)
    world.cycle(advance=2 * 86400)
    assert not os.path.exists(old)


def test_draining_creates_nothing_and_says_why(world):
    world.write(extra_settings="draining = yes")
    report = world.cycle()
    assert report.created == []
    assert set(report.idle) == set(names(4))
    assert all("draining" in r for r in report.idle.values())


def test_machine_ending_in_its_first_second_is_refilled_next_cycle(world):
    world.write(run=0)
    assert sorted(world.cycle().created) == names(4)
    report = world.cycle()  # same second: finished, but the directory name is taken
    assert sorted(report.finished) == names(4) and report.created == []
    assert all("first second" in r for r in report.idle.values()), report.idle
    assert report.errors == []
    assert sorted(world.cycle(advance=1).created) == names(4)
