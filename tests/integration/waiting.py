# SPDX-License-Identifier: BSD-2-Clause
"""Waiting in the integration tests: for a condition, with a generous deadline.

A test never waits for "N cycles within T seconds": it waits until what it is about has
happened, and the deadline only ends a wait that would otherwise never end, so it is set far
beyond what a slow, busy machine (a TCG guest beside a CPU hog) takes. Returning as soon as the
condition holds, a generous deadline costs nothing when things work. Where a test must bound a
time, the bound comes from a measurement taken in the same run (see Stopwatch).
VAC_TEST_DEADLINE (seconds, default 300) sets GENEROUS.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

GENEROUS = float(os.environ.get("VAC_TEST_DEADLINE", "300"))
# The engine API timeout (backend_timeout_seconds) of the tests' factories and backends:
# generous too. A container's creation in the cgroup v2 guest beside a CPU hog took more than
# the 20 s the tests once gave it. Tests of a hanging engine set their own short one.
ENGINE_CALL = GENEROUS


def wait_until(check: Callable[[], bool], timeout: float = GENEROUS, step: float = 0.1) -> bool:
    """True as soon as check() is true; False if it is still false after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return bool(check())


def wait_while_alive(check: Callable[[], bool], proc, timeout: float = GENEROUS,
                     step: float = 0.1) -> bool:
    """wait_until(check), but give up at once when the process `proc` has ended."""
    return wait_until(lambda: check() or proc.poll() is not None, timeout, step) and check()


class Stopwatch:
    """The time a reference action takes on this machine now, to bound another by it.

    bound(factor, floor) = max(floor, factor x the slowest reference measured): a check
    like "given up within its 2 s timeout plus what one call costs here" holds on a busy host
    too, and still fails when the thing bounded hangs for its whole timeout or more.
    """

    def __init__(self) -> None:
        self.samples = []

    def time(self, action: Callable[[], object]) -> object:
        began = time.monotonic()
        try:
            return action()
        finally:
            self.samples.append(time.monotonic() - began)

    def slowest(self) -> float:
        return max(self.samples) if self.samples else 0.0

    def bound(self, factor: float, floor: float, plus: Optional[float] = None) -> float:
        return max(floor, factor * self.slowest()) + (plus or 0.0)
