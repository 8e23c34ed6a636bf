# SPDX-License-Identifier: BSD-2-Clause
"""Creations of one cycle run in parallel, up to the backend's parallel_creations:
really at once, each written on its own, a failure kept to its slot, the report in plan order."""
from __future__ import annotations

import threading
import time

from vac.backends.fake import FakeBackend
from vac.errors import BackendError
from vac.machine.directory import MachineDir

SLOTS = [f"f1-{n:02d}.example.com" for n in range(3)]


ALL_IN = 60.0     # a deadline only: the barrier opens the moment every creation has arrived


class ParallelFake(FakeBackend):
    """A fake that takes several creations at once (its JSON file behind a lock, for creation
    and destruction) and remembers how many ran at the same time; creation fails in `failing`
    slots. Each creation waits at a barrier for `width` of them: creations made one after
    another would break it (after ALL_IN seconds) instead of passing, however fast or slow
    the machine."""

    width = 3
    failing = ()

    def __init__(self, settings, clock=time.time):
        super().__init__(settings, clock)
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0
        self.barrier = threading.Barrier(self.width)

    def parallel_creations(self) -> int:
        return self.width

    def create(self, spec):
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.barrier.wait(timeout=ALL_IN)
            if spec.name in self.failing:
                raise BackendError(self.NAME, "engine refused", spec.name)
            with self.lock:
                return super().create(spec)
        finally:
            with self.lock:
                self.running -= 1

    def destroy(self, name, directory):
        # A failed creation is finished, so destroyed, while the others still create: the
        # JSON file's read-change-write must not interleave with theirs (seen under load:
        # a neighbour's machine lost from the file).
        with self.lock:
            super().destroy(name, directory)


def test_creations_run_at_once_up_to_the_width(make_factory, paths):
    factory, backend, clock = make_factory(backend_class=ParallelFake)
    report = factory.run_cycle()
    assert report.created == SLOTS                       # plan order, whatever finished first
    assert backend.peak == 3                             # all three inside create() at once
    for name in SLOTS:
        d = MachineDir.for_slot(paths, name)
        assert d.started is not None and d.read("jobfeatures/job_id")


def test_width_one_creates_one_at_a_time(make_factory):
    ParallelFake.width = 1
    try:
        factory, backend, clock = make_factory(backend_class=ParallelFake)
        assert factory.run_cycle().created == SLOTS
        assert backend.peak == 1
    finally:
        ParallelFake.width = 3


def test_a_failing_parallel_creation_stays_with_its_slot(make_factory, paths):
    ParallelFake.failing = (SLOTS[1],)
    try:
        factory, backend, clock = make_factory(backend_class=ParallelFake)
        report = factory.run_cycle()
    finally:
        ParallelFake.failing = ()
    assert report.created == [SLOTS[0], SLOTS[2]]
    assert [e.split(" (")[0] for e in report.errors] == [SLOTS[1]]
    assert MachineDir.for_slot(paths, SLOTS[1]).shutdown_message.startswith(
        "700 Vac: creation failed")
    assert sorted(backend._load()) == [SLOTS[0], SLOTS[2]]
    # The failed one is an abort: its machinetype backs off (backoff_seconds = 1000).
    clock.now += 10
    report = factory.run_cycle()
    assert report.created == [] and "backoff" in report.idle[SLOTS[1]]
