# SPDX-License-Identifier: BSD-2-Clause
"""Opportunistic mode, the decision (pure): when Vac yields the host to its owner.

With `yield_load_per_processor` set, each full cycle brings one Sample: the load from outside
Vac's machines (processors' worth of CPU time per second, per host processor) over the time
since the last cycle (vac.cycle.ownerload measures it). The YieldState remembers since when
that load has been above the threshold without a break, and until when creation is paused; it
is kept on disk, so a restarted vacd goes on where the last one stopped.

    above the threshold for yield_grace_seconds  ->  the youngest running machine is destroyed
        with YIELD_MESSAGE, creation pauses for yield_pause_seconds, and the grace starts
        again: if the load stays high, the next youngest goes one grace later
    above the threshold at all                   ->  nothing new is created (it would be the
                                                     next to yield)
    a sample that could not be measured          ->  the grace starts again (never yield on a
                                                     guess); a pause runs on

The message's code is 100, "shutdown as requested by the VM's host/hypervisor": the host takes
its processors back, which is neither the machine's fault nor its machinetype's, so it is not
an abort (code >= 300) and causes no backoff. The pause is the factory's own and applies to
every machinetype; a 400 "banned/disabled" would instead embargo the machinetype on every
factory of the space for backoff_seconds because one host's owner is busy.

Nothing here reads a file or a clock: `now` is an argument.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional, Sequence

from vac.config.model import Settings
from vac.machine.observed import Observed

YIELD_CODE = 100


@dataclass(frozen=True)
class Sample:
    """One cycle's measurement over [start, end]: the load per processor from outside Vac's
    machines (None if it could not be measured, `problem` says why) and the machines' own."""

    start: float
    end: float
    owner: Optional[float]
    machines: float = 0.0
    problem: str = ""


@dataclass(frozen=True)
class YieldState:
    """What survives from cycle to cycle (and across a vacd restart)."""

    above_since: Optional[float] = None     # the owner's load above the threshold since
    paused_until: Optional[float] = None    # no creation before this
    owner: Optional[float] = None           # the last sample's owner load per processor
    sampled: Optional[float] = None         # when that sample ended
    last_yield: Optional[float] = None      # when a machine last yielded
    last_machine: str = ""                  # which one
    yields: int = 0                         # how many have yielded, ever

    def to_json(self) -> Dict[str, Any]:
        return {"above_since": self.above_since, "paused_until": self.paused_until,
                "owner": self.owner, "sampled": self.sampled, "last_yield": self.last_yield,
                "last_machine": self.last_machine, "yields": self.yields}

    @classmethod
    def from_json(cls, value: Any) -> YieldState:
        """The state from its to_json() form; anything unreadable is left at its default."""
        if not isinstance(value, dict):
            return cls()
        numbers = {k: _number(value.get(k)) for k in
                   ("above_since", "paused_until", "owner", "sampled", "last_yield")}
        yields = value.get("yields")
        machine = value.get("last_machine")
        return cls(yields=yields if isinstance(yields, int) and yields >= 0 else 0,
                   last_machine=machine if isinstance(machine, str) else "", **numbers)


@dataclass(frozen=True)
class Verdict:
    """This cycle's decision: the state to keep, whether a machine yields now, and why
    creation is held ("" if it is not)."""

    state: YieldState
    yield_now: bool = False
    hold: str = ""


def enabled(settings: Settings) -> bool:
    return settings.yield_load_per_processor is not None


def judge(settings: Settings, state: YieldState, sample: Optional[Sample],
          now: float) -> Verdict:
    """Fold this cycle's sample (None: no new one, as in a refill) into the state."""
    if not enabled(settings):
        return Verdict(YieldState())
    if sample is not None:
        state = _fold(settings, state, sample)
    due = sample is not None and state.above_since is not None and \
        now - state.above_since >= settings.yield_grace_seconds
    return Verdict(state, yield_now=due, hold=hold_reason(settings, state, now))


def _fold(settings: Settings, state: YieldState, sample: Sample) -> YieldState:
    threshold = settings.yield_load_per_processor
    if sample.owner is None or sample.owner <= threshold:
        return replace(state, above_since=None, owner=sample.owner, sampled=sample.end)
    if sample.end - sample.start > max_gap(settings):
        # A sample spanning more than a normal gap (vacd was stopped, the mode was off) is an
        # average that cannot show the load stayed high: the grace starts at its end.
        since = sample.end
    else:
        since = state.above_since if state.above_since is not None else sample.start
    return replace(state, above_since=since, owner=sample.owner, sampled=sample.end)


def max_gap(settings: Settings) -> float:
    """The longest time between samples that still counts as one unbroken measurement."""
    return max(settings.yield_grace_seconds, 3 * settings.cycle_seconds)


def hold_reason(settings: Settings, state: YieldState, now: float) -> str:
    """Why nothing may be created now in opportunistic mode, or ""."""
    if not enabled(settings):
        return ""
    if state.paused_until is not None and now < state.paused_until:
        return (f"yielding to the host's owner: creation paused until "
                f"{math.ceil(state.paused_until)} ({_clock(state.paused_until)}) after "
                f"{state.last_machine or 'a machine'} yielded")
    if state.above_since is not None and state.owner is not None:
        return (f"yielding to the host's owner: load outside the machines {state.owner:.2f} "
                f"per processor > yield_load_per_processor "
                f"{settings.yield_load_per_processor:g} since {int(state.above_since)} "
                f"({_clock(state.above_since)})")
    return ""


def youngest(candidates: Sequence[Observed]) -> Optional[Observed]:
    """The machine that started last (then created last, then the higher slot), or None."""
    if not candidates:
        return None
    return max(candidates, key=lambda o: (o.started if o.started is not None else
                                          float(o.created or 0), o.created or 0,
                                          o.slot.ordinal))


def yielded(settings: Settings, state: YieldState, machine: str, now: float) -> YieldState:
    """The state after `machine` yielded now: paused, and the grace starts again."""
    return replace(state, above_since=now, paused_until=now + settings.yield_pause_seconds,
                   last_yield=now, last_machine=machine, yields=state.yields + 1)


def message(settings: Settings, state: YieldState, now: float) -> str:
    """The coded shutdown_message of a machine that yields now."""
    since = state.above_since if state.above_since is not None else now
    return (f"{YIELD_CODE} Vac yields to the host's owner: load outside the machines "
            f"{state.owner or 0.0:.2f} per processor above yield_load_per_processor "
            f"{settings.yield_load_per_processor:g} for {int(now - since)} s")


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))
