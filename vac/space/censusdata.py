# SPDX-License-Identifier: BSD-2-Clause
"""The census as data: per machinetype, how much HS06 runs, how many machines are still
"before fizzle" and the last outcome and abort, as the original's space shares and
VacQuery replies count them.

One factory's census is counted from its observed slots (local_census: the cycle's
observation, or the responder's reading of the disk); other factories' machinetype_status
replies are remote input, read with guards (merge_census); censuses add up (add_census) and
are written back as those wire fields (status_fields). Nothing here reads a file or a clock;
the cycle, the space, the web pages and the benchmarks all count with it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

from vac.config.model import MachineType
from vac.machine.directory import MachineState
from vac.machine.observed import Observed
from vac.machine.outcome import (LastOutcome, is_abort, latest, message_code,
                                 outcome_message)

STARTING_WINDOW = 3600    # a Starting machine counts for an hour after creation
HEARTBEAT_WINDOW = 3600   # a Running machine counts while its heartbeat is this fresh
REMOTE_MESSAGE_LIMIT = 1024



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
    last_abort_machine: Optional[str] = None  # the latest abort's machine and message
    last_abort_message: Optional[str] = None


def machine_hs06(hs06: Optional[float], processors: int) -> float:
    """A machine's HS06: its machinefeatures/hs06, else 1.0 per processor."""
    return hs06 if hs06 is not None else float(processors)


def contribution(obs: Observed, fizzle_seconds: float,
                 now: float) -> Optional[Tuple[float, int, bool]]:
    """(hs06, processors, before fizzle) that a machine adds to the census, or None.

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
    outcome reported last of them and finishes/<machinetype> counts (outcome.latest): an
    abort or fizzle seen now backs the machinetype off in this cycle already.
    """
    sums: Dict[str, List[float]] = {name: [0.0, 0, 0, 0] for name in machinetypes}
    outcomes: Dict[str, Optional[LastOutcome]] = {n: last_outcomes.get(n) for n in sums}
    for obs in observed:
        name = obs.machinetype
        if name is None or name not in sums:
            continue
        if obs.state is MachineState.SHUTDOWN:
            if not obs.finished:
                outcomes[name] = latest(outcomes[name], _ending(obs, now))
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
        result[name] = _with_outcome(Census(running_hs06=hs06, num_before_fizzle=int(young),
                                            running_machines=int(machines),
                                            running_processors=int(processors)),
                                     outcomes[name], mt.fizzle_seconds)
    return result


def _ending(obs: Observed, now: float) -> LastOutcome:
    """The outcome of a machine seen shut down, which is finished in this very cycle.

    It was reported when it wrote its message (never later than now), else now: it stopped
    somewhere between its last heartbeat and now, and its run is measured up to then, so a
    long gap between cycles never turns a good run into a fizzle. A message that a backend
    only delivers when the machine is finished counts from the next cycle on.
    """
    told = obs.shutdown_message_time
    return LastOutcome(message=obs.shutdown_message or None,
                       time=now if told is None else min(told, now),
                       machine=obs.slot.name, started=obs.started, created=obs.created)


def _with_outcome(census: Census, outcome: Optional[LastOutcome],
                  fizzle_seconds: float) -> Census:
    if outcome is None:
        return census
    message = outcome_message(outcome.message or None, outcome.started, outcome.time,
                              fizzle_seconds)
    coded = message_code(message) is not None and outcome.time is not None
    aborted = coded and is_abort(message)
    return replace(census, shutdown_message=message, shutdown_machine=outcome.machine,
                   shutdown_time=outcome.time if coded else None,
                   last_abort_time=outcome.time if aborted else None,
                   last_abort_machine=outcome.machine if aborted else None,
                   last_abort_message=message if aborted else None)


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
    aborted = time is not None and is_abort(message)
    machine = machine[:255] if isinstance(machine, str) else None
    return Census(running_hs06=float(_number(status.get("running_hs06"), 0.0)),
                  num_before_fizzle=int(_number(status.get("num_before_fizzle"), 0)),
                  running_machines=int(_number(status.get("running_machines"), 0)),
                  running_processors=int(_number(processors, 0)),
                  shutdown_message=message, shutdown_time=time,
                  shutdown_machine=machine, last_abort_time=time if aborted else None,
                  last_abort_factory=_factory(status) if aborted else None,
                  last_abort_machine=machine if aborted else None,
                  last_abort_message=message if aborted else None)


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
                  last_abort_factory=aborted.last_abort_factory,
                  last_abort_machine=aborted.last_abort_machine,
                  last_abort_message=aborted.last_abort_message)


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

