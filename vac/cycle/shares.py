# SPDX-License-Identifier: BSD-2-Clause
"""Target shares across the space: census, scores, backoff/fizzle eligibility, superslots (pure).

The census says, per machinetype and summed over the space, how much HS06 runs, how many
machines are still "before fizzle" and when the last abort happened (§3.7, §3.8, §9.3). From
it, `Shares` keeps one cycle's working scores and tells which machinetypes may start, most
starved machinegroup first; `choose` then picks a machinetype, a size and a shutdown time
from the superslot map (§3.9). Nothing here reads a file or a clock.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from vac import planfile
from vac.config.model import MachineType
from vac.machine.directory import MachineState
from vac.planfile import IdleReason

if TYPE_CHECKING:
    from vac.cycle.observed import Observed

ABORT_CODE = 300          # shutdown codes >= 300 are aborts (§3.8)
STARTING_WINDOW = 3600    # a Starting machine counts for an hour after creation (§9.3)
HEARTBEAT_WINDOW = 3600   # a Running machine counts while its heartbeat is this fresh (§9.3)
REMOTE_MESSAGE_LIMIT = 1024
FIZZLE_FORMAT = "300 Vac detects fizzle after {} seconds"


# Shutdown messages and outcomes -------------------------------------------------------------

def message_code(message: Optional[str]) -> Optional[int]:
    """The shutdown code: the message's first 3 characters if they are ASCII digits."""
    if not message:
        return None
    head = message.lstrip()[:3]
    if len(head) == 3 and head.isascii() and head.isdigit():
        return int(head)
    return None


def is_abort(message: Optional[str]) -> bool:
    """True for 300 no work, 400 banned, 500 site, 600 grid-wide, 700 transient problems."""
    code = message_code(message)
    return code is not None and code >= ABORT_CODE


def outcome_message(message: Optional[str], started: Optional[float], ended: Optional[float],
                    fizzle_seconds: float) -> Optional[str]:
    """The message a machine's outcome is judged by (the intended rule of §3.8, §17 item 3).

    A message with a code is returned as it is. A machine that ran (it has `started`) for less
    than fizzle_seconds and left no coded message gets "300 Vac detects fizzle after N
    seconds". Otherwise the message (perhaps None) is returned unchanged, so a caller writes
    the result only when the machine wrote nothing itself.
    """
    if message_code(message) is not None:
        return message
    if started is None or ended is None or fizzle_seconds <= 0:
        return message
    ran = ended - started
    if ran < fizzle_seconds:
        return FIZZLE_FORMAT.format(max(0, int(ran)))
    return message


@dataclass(frozen=True)
class LastOutcome:
    """The machine finishes/<machinetype> names: its message, when it ended, when it started."""

    message: Optional[str]
    time: Optional[float]
    machine: str
    started: Optional[float] = None
    created: Optional[int] = None


# The census -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Census:
    """One machinetype's space-wide sums (the machinetype_status fields that drive shares).

    shutdown_message/shutdown_time/shutdown_machine are the last outcome reported (time only
    for coded messages, as the original sent it); last_abort_time is the latest abort.
    """

    running_hs06: float = 0.0
    num_before_fizzle: int = 0
    last_abort_time: Optional[float] = None
    running_machines: int = 0
    running_processors: int = 0
    shutdown_message: Optional[str] = None
    shutdown_time: Optional[float] = None
    shutdown_machine: Optional[str] = None
    last_abort_factory: Optional[str] = None  # another factory, when its abort is the latest


def machine_hs06(hs06: Optional[float], processors: int) -> float:
    """A machine's HS06: its machinefeatures/hs06, else 1.0 per processor (§3.3)."""
    return hs06 if hs06 is not None else float(processors)


def contribution(obs: Observed, fizzle_seconds: float,
                 now: float) -> Optional[Tuple[float, int, bool]]:
    """(hs06, processors, before fizzle) that a machine adds to the census, or None (§9.3).

    Running (and Paused, which the disk cannot tell from Running) machines count while their
    heartbeat is under an hour old; Starting ones for an hour after creation, before fizzle.
    """
    if obs.finished:
        return None
    state = obs.state
    if state is MachineState.RUNNING or state is MachineState.PAUSED:
        if obs.last_heartbeat is not None and now - obs.last_heartbeat >= HEARTBEAT_WINDOW:
            return None
        young = obs.started is not None and now < obs.started + fizzle_seconds
        return machine_hs06(obs.hs06, obs.processors), obs.processors, young
    if state is MachineState.STARTING and obs.created is not None \
            and now - obs.created < STARTING_WINDOW:
        return machine_hs06(obs.hs06, obs.processors), obs.processors, True
    return None


def local_census(observed: Iterable[Observed], last_outcomes: Mapping[str, LastOutcome],
                 machinetypes: Mapping[str, MachineType], now: float) -> Dict[str, Census]:
    """This factory's census, one entry per configured machinetype.

    Machines seen shut down but not yet finished are finished in this very cycle, so the
    most recently created of them stands in for finishes/<machinetype> when it is newer:
    an abort or fizzle seen now backs the machinetype off in this cycle already.
    """
    sums: Dict[str, List[float]] = {name: [0.0, 0, 0, 0] for name in machinetypes}
    ending: Dict[str, Observed] = {}
    for obs in observed:
        name = obs.machinetype
        if name is None or name not in sums:
            continue
        if obs.state is MachineState.SHUTDOWN:
            if not obs.finished and _created(obs.created) >= _created(
                    ending[name].created if name in ending else None):
                ending[name] = obs
            continue
        part = contribution(obs, machinetypes[name].fizzle_seconds, now)
        if part is not None:
            acc = sums[name]
            acc[0] += part[0]
            acc[1] += 1
            acc[2] += part[1]
            acc[3] += 1 if part[2] else 0
    result = {}
    for name, mt in machinetypes.items():
        hs06, machines, processors, young = sums[name]
        outcome = _newest(last_outcomes.get(name), ending.get(name), now)
        result[name] = _with_outcome(Census(running_hs06=hs06, num_before_fizzle=int(young),
                                            running_machines=int(machines),
                                            running_processors=int(processors)),
                                     outcome, mt.fizzle_seconds)
    return result


def _created(created: Optional[int]) -> float:
    return -math.inf if created is None else created


def _newest(recorded: Optional[LastOutcome], ending: Optional[Observed],
            now: float) -> Optional[LastOutcome]:
    """finishes/<mt>'s outcome, or the unfinished machine's if it is the more recently created.

    The unfinished machine is finished now, so now is its outcome time. It stopped somewhere
    between its last heartbeat and now; its run is measured up to now, so a long gap between
    cycles never turns a good run into a fizzle. A message that a backend only delivers when
    the machine is finished counts from the next cycle on.
    """
    if ending is None:
        return recorded
    if recorded is not None and recorded.created is not None and ending.created is not None \
            and recorded.created > ending.created:
        return recorded
    return LastOutcome(message=ending.shutdown_message or None, time=now,
                       machine=ending.slot.name, started=ending.started, created=ending.created)


def _with_outcome(census: Census, outcome: Optional[LastOutcome],
                  fizzle_seconds: float) -> Census:
    if outcome is None:
        return census
    message = outcome_message(outcome.message or None, outcome.started, outcome.time,
                              fizzle_seconds)
    coded = message_code(message) is not None and outcome.time is not None
    return replace(census, shutdown_message=message, shutdown_machine=outcome.machine,
                   shutdown_time=outcome.time if coded else None,
                   last_abort_time=outcome.time if coded and is_abort(message) else None)


def merge_census(statuses: Iterable[Mapping[str, Any]]) -> Dict[str, Census]:
    """Sum machinetype_status replies (one dict per factory and machinetype) into a census.

    Replies are remote input: a field of the wrong type or out of range counts as absent.
    A reply's last outcome is an abort when its message code is >= 300 and it has a time.
    For a VacQuery result: merge_census(r for f in result.values()
    for r in f["machinetypes"].values()).
    """
    merged: Dict[str, Census] = {}
    for status in statuses:
        if not isinstance(status, Mapping):
            continue
        name = status.get("machinetype")
        if not isinstance(name, str) or not name:
            continue
        one = _from_status(status)
        merged[name] = _add(merged[name], one) if name in merged else one
    return merged


def _from_status(status: Mapping[str, Any]) -> Census:
    message = status.get("shutdown_message")
    message = message[:REMOTE_MESSAGE_LIMIT] if isinstance(message, str) and message else None
    time = _number(status.get("shutdown_time"), None)
    machine = status.get("shutdown_machine")
    processors = status.get("running_processors", status.get("running_cpus"))
    return Census(running_hs06=float(_number(status.get("running_hs06"), 0.0)),
                  num_before_fizzle=int(_number(status.get("num_before_fizzle"), 0)),
                  running_machines=int(_number(status.get("running_machines"), 0)),
                  running_processors=int(_number(processors, 0)),
                  shutdown_message=message, shutdown_time=time,
                  shutdown_machine=machine[:255] if isinstance(machine, str) else None,
                  last_abort_time=time if time is not None and is_abort(message) else None,
                  last_abort_factory=_factory(status) if time is not None and is_abort(message)
                  else None)


def _factory(status: Mapping[str, Any]) -> Optional[str]:
    factory = status.get("factory")
    return factory[:255] if isinstance(factory, str) and factory else None


def _number(value: Any, default: Any) -> Any:
    """A finite, non-negative int or float from remote input, else default."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return default
    if not math.isfinite(value) or value < 0:
        return default
    return value


def _add(a: Census, b: Census) -> Census:
    latest = a if _later(a.shutdown_time, b.shutdown_time) else b
    aborts = [t for t in (a.last_abort_time, b.last_abort_time) if t is not None]
    aborted = a if _later(a.last_abort_time, b.last_abort_time) else b
    return Census(running_hs06=a.running_hs06 + b.running_hs06,
                  num_before_fizzle=a.num_before_fizzle + b.num_before_fizzle,
                  last_abort_time=max(aborts) if aborts else None,
                  running_machines=a.running_machines + b.running_machines,
                  running_processors=a.running_processors + b.running_processors,
                  shutdown_message=latest.shutdown_message,
                  shutdown_time=latest.shutdown_time,
                  shutdown_machine=latest.shutdown_machine,
                  last_abort_factory=aborted.last_abort_factory)


def _later(a: Optional[float], b: Optional[float]) -> bool:
    """True if outcome time a is at least as late as b (an outcome without a time is oldest)."""
    return b is None or (a is not None and a >= b)


def add_census(*censuses: Mapping[str, Census]) -> Dict[str, Census]:
    """Combine censuses (e.g. this factory's local_census and the other factories' replies)."""
    total: Dict[str, Census] = {}
    for census in censuses:
        for name, entry in census.items():
            total[name] = _add(total[name], entry) if name in total else entry
    return total


def status_fields(census: Census) -> Dict[str, Any]:
    """The machinetype_status fields that carry a census entry (merge_census reads them back)."""
    return {"running_hs06": round(census.running_hs06, 2),
            "running_machines": census.running_machines,
            "running_processors": census.running_processors,
            "running_cpus": census.running_processors,
            "num_before_fizzle": census.num_before_fizzle,
            "shutdown_message": census.shutdown_message,
            "shutdown_time": None if census.shutdown_time is None else int(census.shutdown_time),
            "shutdown_machine": census.shutdown_machine}


# Eligibility and order -------------------------------------------------------------------

def embargo_until(mt: MachineType, census: Census) -> Optional[float]:
    """Last abort + backoff_seconds (+ fizzle_seconds while any machine is before fizzle)."""
    if census.last_abort_time is None:
        return None
    extra = mt.fizzle_seconds if census.num_before_fizzle > 0 else 0
    return census.last_abort_time + mt.backoff_seconds + extra


def ineligible_reason(mt: MachineType, census: Census, now: float,
                      shutdown_time: Optional[int]) -> Optional[IdleReason]:
    """Why mt may not be started now (§3.7 step 3), or None if it may."""
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
        """One log line per machinetype with a recent abort (§3.7 step 4)."""
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
    """Pick from the eligible machinetypes (in order) by the superslot rules of §3.9.

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
