# SPDX-License-Identifier: BSD-2-Clause
"""Target shares across the space: scores, backoff eligibility, superslots (pure).

From the space's census (vac.space.censusdata: per machinetype, HS06 running, machines before
fizzle, the last abort), `Shares` keeps one cycle's working scores and tells which
machinetypes may start, most starved machinegroup first; `choose` then picks a machinetype, a
size and a shutdown time from the superslot map. Nothing here reads a file or a clock.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from vac import planfile
from vac.config.model import MachineType
from vac.planfile import IdleReason
from vac.space.censusdata import Census


# Eligibility and order -------------------------------------------------------------------

def embargo_until(mt: MachineType, census: Census) -> Optional[float]:
    """Last abort + backoff_seconds (+ fizzle_seconds while any machine is before fizzle)."""
    if census.last_abort_time is None:
        return None
    extra = mt.fizzle_seconds if census.num_before_fizzle > 0 else 0
    return census.last_abort_time + mt.backoff_seconds + extra


def ineligible_reason(mt: MachineType, census: Census, now: float,
                      shutdown_time: Optional[int]) -> Optional[IdleReason]:
    """Why mt may not be started now (no share, past shutdown_time, or backing off after
    an abort), or None if it may."""
    if mt.target_share <= 0:
        return IdleReason(planfile.NO_SHARE, f"{mt.name} has no target_share",
                          machinetype=mt.name)
    if shutdown_time is not None and now + mt.min_wallclock_seconds >= shutdown_time:
        return IdleReason(planfile.MIN_WALLCLOCK,
                          f"{mt.name}: min_wallclock_seconds {mt.min_wallclock_seconds} would "
                          f"end after shutdown_time {shutdown_time}", machinetype=mt.name,
                          until=float(shutdown_time))
    until = embargo_until(mt, census)
    if until is not None and now <= until:
        return backoff_reason(mt.name, math.ceil(until), census.last_abort_factory,
                              census.last_abort_time)
    return None


def backoff_reason(machinetype: str, until: int, factory: Optional[str],
                   abort_time: Optional[float]) -> IdleReason:
    """A backoff as an idle reason: until when, and the factory whose abort caused it."""
    text = f"backoff of {machinetype} until {until}"
    if factory and abort_time is not None:
        text += (f": abort on {factory.split('.')[0]} at "
                 f"{time.strftime('%H:%M', time.localtime(abort_time))}")
    return IdleReason(planfile.BACKOFF, text, machinetype=machinetype, until=float(until),
                      factory=factory)


class Shares:
    """One cycle's working shares: scores move as machines are planned or end.

    A score is running HS06 per unit of target share, summed over the space; eligible
    machinetypes are ordered by (machinegroup score, own score, random tiebreak), so the
    most starved group, then machinetype, comes first. Types with no share take no part.
    """

    def __init__(self, machinetypes: Mapping[str, MachineType], census: Mapping[str, Census],
                 rng: random.Random, hs06_per_processor: Optional[float] = None):
        self._types = [machinetypes[n] for n in sorted(machinetypes)
                       if machinetypes[n].target_share > 0]
        self._by_name = {mt.name: mt for mt in self._types}
        self._census = {mt.name: census.get(mt.name) or Census() for mt in self._types}
        self._tiebreak = {mt.name: rng.random() for mt in self._types}
        self._groups: Dict[str, List[MachineType]] = {}
        for mt in self._types:
            self._groups.setdefault(mt.machinegroup, []).append(mt)
        self._hs06_per_processor = hs06_per_processor or 1.0
        self._score: Dict[str, float] = {}
        self._group_score: Dict[str, float] = {}
        for group in self._groups:
            self._rescore(group)

    def _rescore(self, group: str) -> None:
        total = 0.0
        for mt in self._groups[group]:
            score = self._census[mt.name].running_hs06 / mt.target_share
            self._score[mt.name] = score
            total += score
        self._group_score[group] = total

    def census(self, name: str) -> Census:
        return self._census.get(name) or Census()

    def score(self, name: str) -> Tuple[float, float]:
        """(machinegroup score, own score) of a machinetype with a share."""
        return self._group_score[self._by_name[name].machinegroup], self._score[name]

    def ordered(self, now: float,
                shutdown_time: Optional[int]) -> Tuple[List[MachineType], List[IdleReason]]:
        """Eligible machinetypes, most starved first, and why each of the others is not."""
        eligible, reasons = [], []
        for mt in self._types:
            why = ineligible_reason(mt, self._census[mt.name], now, shutdown_time)
            if why is None:
                eligible.append(mt)
            else:
                reasons.append(why)
        eligible.sort(key=lambda mt: (self._group_score[mt.machinegroup], self._score[mt.name],
                                      self._tiebreak[mt.name]))
        return eligible, reasons

    def planned(self, name: str, processors: int) -> None:
        """A machine of this type will be created now: it runs and is before fizzle."""
        mt = self._by_name.get(name)
        if mt is None:
            return
        c = self._census[name]
        self._census[name] = replace(
            c, running_hs06=c.running_hs06 + self._hs06_per_processor * processors,
            num_before_fizzle=c.num_before_fizzle + 1, running_machines=c.running_machines + 1,
            running_processors=c.running_processors + processors)
        self._rescore(mt.machinegroup)

    def ended(self, name: str, part: Optional[Tuple[float, int, bool]],
              abort_time: Optional[float]) -> None:
        """A counted machine ends in this cycle: take its part away, note its abort."""
        mt = self._by_name.get(name)
        if mt is None:
            return
        c = self._census[name]
        if part is not None:
            c = replace(c, running_hs06=max(0.0, c.running_hs06 - part[0]),
                        running_machines=max(0, c.running_machines - 1),
                        running_processors=max(0, c.running_processors - part[1]),
                        num_before_fizzle=max(0, c.num_before_fizzle - (1 if part[2] else 0)))
        if abort_time is not None and (c.last_abort_time is None
                                       or abort_time > c.last_abort_time):
            c = replace(c, last_abort_time=abort_time, last_abort_factory=None)
        self._census[name] = c
        self._rescore(mt.machinegroup)

    def notes(self, now: float) -> List[str]:
        """One log line per machinetype with a recent abort, as the original logged them."""
        lines = []
        for mt in self._types:
            c = self._census[mt.name]
            until = embargo_until(mt, c)
            if until is not None and c.last_abort_time is not None \
                    and until >= now - mt.fizzle_seconds:
                lines.append(f"{mt.name}: {c.num_before_fizzle} before fizzle, last abort at "
                             f"{int(c.last_abort_time)}, may restart after {math.ceil(until)}")
        return lines


# Size and shutdown time (superslots) ------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """What to create next: machinetype, processors, shutdown time."""

    machinetype: MachineType
    processors: int
    shutdown_time: int


def choose(ordered: Sequence[MachineType], incomplete: Iterable[Tuple[int, int]], free: int,
           per_superslot: int, now: float) -> Tuple[Optional[Choice], str]:
    """Pick from the eligible machinetypes (in order) by the superslot rules.

    `incomplete` is (shutdown time, processors running until then) for every superslot whose
    processors are not a multiple of per_superslot, in ascending time. Processors needed to
    complete them are reserved first, even when nothing fits. Returns (choice, "") or
    (None, why nothing fits).
    """
    now_i = int(now)
    left = free
    smallest = min((mt.min_processors for mt in ordered), default=1)
    for when, used in incomplete:
        if left <= 0:
            break
        need = min(left, per_superslot - used % per_superslot)
        left -= need
        if need < smallest:
            continue
        for mt in ordered:
            if need >= mt.min_processors and \
                    mt.min_wallclock_seconds <= when - now_i <= mt.max_wallclock_seconds:
                return Choice(mt, min(need, mt.max_processors, per_superslot), when), ""
    if left > 0:
        size = min(left, per_superslot)
        for mt in ordered:
            if size >= mt.min_processors:
                return Choice(mt, min(left, mt.max_processors, per_superslot),
                              now_i + mt.max_wallclock_seconds), ""
    mins = ", ".join(f"{mt.name}={mt.min_processors}" for mt in ordered)
    reserved = f" after {free - left} reserved for incomplete superslots" if free > left else ""
    return None, (f"nothing fits: {max(left, 0)} free processors{reserved}, "
                  f"processors_per_superslot {per_superslot}; min_processors {mins}")
