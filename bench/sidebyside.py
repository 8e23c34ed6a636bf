# SPDX-License-Identifier: BSD-2-Clause
"""Timing vacd and the raw backend call side by side: alternating runs, medians, verdicts.

Every benchmark runs its two sides in turn (which goes first alternates too, so neither side
always finds the caches the other warmed), times the vacd side's create steps inside a real
Factory cycle, and prints medians with their spread and a ratio against its target.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, List, Sequence, Tuple

from vac.cycle import factory as factorymod


def alternate(pairs: int, first: Callable[[], None], second: Callable[[], None]) -> None:
    """Run both sides `pairs` times: first, second, then second, first, and so on."""
    for i in range(pairs):
        for side in ((first, second) if i % 2 == 0 else (second, first)):
            side()


def timed_alternately(pairs: int, first: Callable[[], float], second: Callable[[], float],
                      warmups: int = 0) -> Tuple[List[float], List[float]]:
    """alternate() two sides that return their own times: (first's, second's) times, without
    those of the first `warmups` pairs."""
    times: Tuple[List[float], List[float]] = ([], [])
    count = [0, 0]

    def side(index: int, fn: Callable[[], float]) -> Callable[[], None]:
        def run() -> None:
            took = fn()
            if count[index] >= warmups:
                times[index].append(took)
            count[index] += 1
        return run

    alternate(pairs, side(0, first), side(1, second))
    return times


def ratio(ours: Sequence[float], raw: Sequence[float]) -> float:
    """The ratio of the medians, ours / raw."""
    return statistics.median(ours) / statistics.median(raw)


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "OVER TARGET"


def ms(values: Sequence[float], width: int = 9) -> str:
    """Median, min and max in milliseconds, each right-aligned in `width` characters + "ms"."""
    return (f"{statistics.median(values) * 1000:>{width}.1f}ms"
            f"{min(values) * 1000:>{width}.1f}ms{max(values) * 1000:>{width}.1f}ms")


def ms_spread(values: Sequence[float]) -> str:
    """The median in milliseconds, then min and max: "   67.3 ms   (min 66.0, max 70.1)"."""
    return (f"{statistics.median(values) * 1000:7.1f} ms   (min {min(values) * 1000:.1f}, "
            f"max {max(values) * 1000:.1f})")


class TimedCreations:
    """Wraps factory.create_machine while in use: times each create step of a cycle until
    until_running(slot, created) returns (the backend says the machine runs)."""

    def __init__(self, until_running: Callable[[Any, Any], None]):
        self.until_running = until_running
        self.times: List[float] = []
        self.real = factorymod.create_machine

    def __call__(self, settings, machinetype, slot, *args, **kw):
        start = time.perf_counter()
        created = self.real(settings, machinetype, slot, *args, **kw)
        self.until_running(slot, created)
        self.times.append(time.perf_counter() - start)
        return created

    def __enter__(self) -> TimedCreations:
        factorymod.create_machine = self
        return self

    def __exit__(self, *exc) -> None:
        factorymod.create_machine = self.real


def timed_cycle(factory, until_running: Callable[[Any, Any], None]) -> Tuple[
        float, TimedCreations, Any]:
    """One factory.run_cycle() with its create steps timed: (seconds the cycle took, the
    TimedCreations, the cycle's report). Exits if the cycle reports errors."""
    with TimedCreations(until_running) as timed:
        start = time.perf_counter()
        report = factory.run_cycle()
        took = time.perf_counter() - start
    if report.errors:
        raise SystemExit(f"cycle errors: {report.errors}")
    return took, timed, report
