# SPDX-License-Identifier: BSD-2-Clause
"""The factory against an engine's realities, on the fake backend: an engine that is down
while a slot is free, a backend whose id is not the UUID, orphans before anything runs."""
from __future__ import annotations

from vac.backends.fake import FakeBackend
from vac.errors import BackendError
from vac.machine.directory import MachineDir


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
