# SPDX-License-Identifier: BSD-2-Clause
"""The factory against an engine's realities, on the fake backend: an engine that is down
while a slot is free, a backend whose id is not the UUID, orphans before anything runs."""
from __future__ import annotations

import random

import pytest

from vac.backends.fake import FakeBackend
from vac.config import load
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory
from vac.errors import BackendError
from vac.machine.directory import MachineDir

CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 3
overload_per_processor = 100
max_creations_per_cycle = {cap}

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
backoff_seconds = 1000
fake_run_seconds = 5000
"""


class IdBackend(FakeBackend):
    """A fake whose machines have an id of their own (as a container id is), not the UUID."""

    def create(self, spec):
        super().create(spec)
        machines = self._load()
        machines[spec.name]["id"] = f"c0ffee{spec.slot.ordinal:058d}"
        self._save(machines)
        return machines[spec.name]["id"]


class BlindBackend(IdBackend):
    """Its engine answers, but not about one machine (an inspect that fails)."""

    blind = ""

    def status(self, name, directory):
        if name == self.blind:
            raise BackendError(self.NAME, "inspect failed", name)
        return super().status(name, directory)


class Clock:
    def __init__(self):
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_factory(tmp_path, paths, host):
    template = tmp_path / "user_data"
    template.write_text("#!/bin/sh\n# ##user_data_uuid##\n")

    def make(cap: int = 100, backend_class=FakeBackend):
        conf = tmp_path / "vac.conf"
        conf.write_text(CONF.format(state=paths.state_dir, cap=cap, user_data=template))

        def read_config():
            return load.build(load.read_raw([str(conf)]), host)

        clock = Clock()
        backend = backend_class(read_config().settings, clock=clock)
        factory = Factory(read_config, BackendPool(read_config().settings, {"fake": backend}),
                          clock=clock,
                          loadavg=lambda: (0.0, 0.0, 0.0), rng=random.Random(1))
        factory.started = clock.now - 10_000
        return factory, backend, clock

    return make


def test_engine_down_with_a_free_slot_waits_without_failed_creation(make_factory, paths):
    factory, fake, clock = make_factory(cap=2)
    assert len(factory.run_cycle().created) == 2
    fake.available = False
    clock.now += 10
    report = factory.run_cycle()
    assert report.created == report.errors == report.finished == report.destroyed == []
    free = "f1-02.example.com"
    assert report.idle[free] == ("backend fake unavailable: fake engine switched off by the "
                                 "test (alpha waiting)")
    assert MachineDir.for_slot(paths, free) is None       # no failed machine, no backoff
    fake.available = True
    clock.now += 10
    assert factory.run_cycle().created == [free]


def test_job_id_stays_the_uuid_and_a_backend_id_is_not_a_zombie(make_factory, paths):
    factory, backend, clock = make_factory(backend_class=IdBackend)
    created = factory.run_cycle().created
    assert len(created) == 3
    for name in created:
        d = MachineDir.for_slot(paths, name)
        assert d.read("user_data") == f"#!/bin/sh\n# {d.job_id}\n"
        assert not d.job_id.startswith("c0ffee")
    clock.now += 10
    report = factory.run_cycle()
    assert report.zombies == [] and report.destroyed == [] and report.created == []


def test_orphans_are_removed_on_the_first_cycle_of_an_empty_factory(make_factory):
    factory, fake, clock = make_factory()
    fake._save({"f1-07.example.com": {"id": "x", "started": clock.now, "run_seconds": 100,
                                      "cpu_per_second": 0.5, "message": None, "dir": ""}})
    report = factory.run_cycle()
    assert report.zombies == ["f1-07.example.com"]
    assert len(report.created) == 3


def test_a_machine_that_cannot_be_observed_is_not_a_zombie(make_factory):
    factory, backend, clock = make_factory(backend_class=BlindBackend)
    assert len(factory.run_cycle().created) == 3
    backend.blind = "f1-01.example.com"
    clock.now += 10
    report = factory.run_cycle()
    assert report.zombies == report.destroyed == report.finished == report.created == []
    assert "f1-01.example.com" in backend._load()
