# SPDX-License-Identifier: BSD-2-Clause
"""The factory cycle's decisions: observed slots + space census -> one Plan of actions (pure).

plan() walks the slots in order: running machines get a heartbeat, a lowered shutdown
time and, past their time or failing the heartbeat-file rule, a destroy; paused
machines and creations left Starting are destroyed; shut-down machines not yet finished are
finished. Every slot that ends up empty may be refilled in the same cycle: as many machines
as the creation gate allows, up to settings.max_creations_per_cycle, each chosen by
target shares, backoff/fizzle and superslots, the gate re-checked after
each one with the planned machines counted as running. Every free slot left empty gets the
reason why, as data (vac.planfile.IdleReason: kind, machinetype, until, factory, text).

What blocks creation from outside comes in as arguments, never as a doctored Config:
`waiting` (machinetypes whose backend is unavailable this cycle: they take no part in the
shares and their slots say why) and `blocked` (the configuration is rejected or missing:
nothing is created, every free slot gives that reason), and `pressure` (the host's PSI
reading: creation pauses while it is above a threshold, vac.cycle.gate), and `disk` (the
host's free disk space and the machines' scratch: creation stops near a floor,
vac.cycle.diskgate), and `memory` (MemAvailable and the machines' usage: each creation must
fit beside what the running ones may still take, vac.cycle.memorygate). The factory applies
the plan; a disk stop never stops the management of running machines;
nothing here touches a file, a backend or a clock.
"""
from __future__ import annotations

import bisect
import os
import random
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

from vac import planfile
from vac.config.model import Config, MachineType, Settings
from vac.cycle import diskgate, gate, memorygate, shedding, yielding
from vac.cycle.shares import Shares, choose
from vac.host.diskspace import DiskReading
from vac.host.memory import MemoryReading
from vac.host.pressure import Reading as PressureReading
from vac.machine.directory import MachineState
from vac.machine.observed import Observed
from vac.machine.outcome import is_abort, outcome_message
from vac.machine.slots import Slot
from vac.planfile import IdleReason
from vac.space.censusdata import Census, contribution, machine_hs06

HEARTBEAT_NOT_CREATED = "700 Heartbeat file not created"
HEARTBEAT_NOT_UPDATED = "700 Heartbeat file not updated"
CREATION_NOT_FINISHED = "700 Vac could not finish creating the machine"
SHUTDOWN_TIME_REACHED = "100 Shutdown time reached"
DEFAULT_MACHINES_DIR_DAYS = 3.0

_RUNNING = MachineState.RUNNING
_SHUTDOWN = MachineState.SHUTDOWN
_PAUSED = MachineState.PAUSED
_STARTING = MachineState.STARTING


@dataclass(frozen=True)
class Heartbeat:
    """Rewrite the machine's heartbeat file with its CPU seconds."""

    name: str
    cpu_seconds: float


@dataclass(frozen=True)
class LowerShutdown:
    """Lower machinefeatures/shutdowntime and jobfeatures/shutdowntime_job to new_time."""

    name: str
    new_time: int


@dataclass(frozen=True)
class Destroy:
    """Destroy the machine; write message as its shutdown_message if it wrote none."""

    name: str
    message: Optional[str]
    reason: str


@dataclass(frozen=True)
class Finish:
    """A machine found shut down and not finished: finish it (vac.cycle.finishing decides
    from its directory what to record and whether to account it)."""

    name: str


@dataclass(frozen=True)
class Create:
    """Create a machine of this machinetype in this slot."""

    slot: Slot
    machinetype: str
    processors: int
    shutdown_time: int


@dataclass(frozen=True)
class Idle:
    """A free slot left empty this cycle, and exactly why (`why`, the data). `reason` is its
    text for people; unpacks as (slot, reason text)."""

    slot: Slot
    why: IdleReason

    @property
    def reason(self) -> str:
        return self.why.text

    def __iter__(self) -> Iterator:
        return iter((self.slot, self.reason))


@dataclass(frozen=True)
class Counts:
    """The /var/lib/vac/counts values after this cycle's destroys, before its creations: the
    machines that run on after the slot scan, as the original wrote them (its step 12, after
    the scan that kills what is past its time, before the creation gate). The factory writes
    these, in `counts` and in plan.json."""

    running_machines: int = 0
    slots: int = 0
    running_processors: int = 0
    total_processors: int = 0
    running_hs06: float = 0.0

    def text(self) -> str:
        return (f"{self.running_machines} {self.slots} {self.running_processors} "
                f"{self.total_processors} {self.running_hs06:.2f}")


@dataclass(frozen=True)
class Plan:
    """Everything one cycle will do, in the order the factory applies it.

    Destroyed machines are not listed in `finishes`: the factory finishes each machine it
    did destroy. `notes` say, per machinetype with a recent abort, its machines before fizzle
    and when it may restart (they go into plan.json).
    """

    heartbeats: Tuple[Heartbeat, ...] = ()
    lower_shutdown: Tuple[LowerShutdown, ...] = ()
    destroys: Tuple[Destroy, ...] = ()
    finishes: Tuple[Finish, ...] = ()
    creates: Tuple[Create, ...] = ()
    idle: Tuple[Idle, ...] = ()
    counts: Counts = Counts()
    cvmfs_repositories: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    yield_state: Optional[yielding.YieldState] = None   # opportunistic mode's, to keep
    pressure_paused: FrozenSet[str] = frozenset()        # resources paused for pressure
    shed_state: shedding.ShedState = shedding.ShedState()   # shedding's, to keep
    pressure: Optional[PressureReading] = None               # the host's, as decided on
    disk_stop: Optional[IdleReason] = None                   # why free space stops creation
    disk: Optional[Dict] = None                              # the disk reading, as data
    memory_stop: Optional[IdleReason] = None                 # why memory stopped creation

    def idle_reasons(self) -> Dict[str, str]:
        """Machine name of each idle slot -> why it stays empty (the text)."""
        return {i.slot.name: i.reason for i in self.idle}

    def idle_data(self) -> Dict[str, IdleReason]:
        """Machine name of each idle slot -> why it stays empty (the data)."""
        return {i.slot.name: i.why for i in self.idle}


@dataclass
class _Scan:
    """What the slot scan found: actions, free slots and what still runs."""

    heartbeats: List[Heartbeat] = field(default_factory=list)
    lowers: List[LowerShutdown] = field(default_factory=list)
    destroys: List[Destroy] = field(default_factory=list)
    finishes: List[Finish] = field(default_factory=list)
    free: List[Slot] = field(default_factory=list)
    ended: List[Tuple[str, Optional[Tuple[float, int, bool]], Optional[float]]] = \
        field(default_factory=list)
    machines: int = 0
    processors: int = 0
    hs06: float = 0.0
    superslots: Dict[int, int] = field(default_factory=dict)
    cvmfs: Set[str] = field(default_factory=set)
    kept: Dict[str, Tuple[Observed, Optional[int], Optional[MachineType]]] = \
        field(default_factory=dict)

    def keep(self, obs: Observed, end: Optional[int], mt: Optional[MachineType]) -> None:
        """Count a machine that runs on after this cycle's decisions."""
        self.kept[obs.slot.name] = (obs, end, mt)
        self.machines += 1
        self.processors += obs.processors
        self.hs06 += machine_hs06(obs.hs06, obs.processors)
        if end is not None:
            self.superslots[end] = self.superslots.get(end, 0) + obs.processors
        if mt is not None and mt.cvmfs_repositories:
            self.cvmfs.update(mt.cvmfs_repositories)

    def release(self, name: str) -> None:
        """Undo keep(): the machine is destroyed after all (it yields)."""
        obs, end, mt = self.kept.pop(name)
        self.machines -= 1
        self.processors -= obs.processors
        self.hs06 -= machine_hs06(obs.hs06, obs.processors)
        if end is not None:
            self.superslots[end] -= obs.processors
            if not self.superslots[end]:
                del self.superslots[end]
        self.cvmfs = {r for _, _, t in self.kept.values() if t is not None
                      for r in t.cvmfs_repositories}


def plan(config: Config, observed: Sequence[Observed], census: Mapping[str, Census], *,
         load: float, now: float, daemon_started: float, rng: random.Random,
         yield_state: Optional[yielding.YieldState] = None,
         owner: Optional[yielding.Sample] = None,
         waiting: Optional[Mapping[str, str]] = None,
         blocked: Optional[IdleReason] = None,
         pressure: Optional[PressureReading] = None,
         pressure_paused: FrozenSet[str] = frozenset(),
         shed_state: Optional[shedding.ShedState] = None,
         disk: Optional[DiskReading] = None,
         memory: Optional[MemoryReading] = None) -> Plan:
    """Decide one cycle. `census` is space-wide, this factory's local_census included.

    `load` is the load average to throttle by; `daemon_started` starts the heartbeat-file
    grace period; `rng` breaks ties between equally starved machinetypes. `yield_state` and
    `owner` (this cycle's sample, None in a refill) are opportunistic mode's (vac.cycle.yielding).
    `waiting`: machinetype -> why its backend cannot take machines this cycle ("backend docker
    unavailable: ..."); `blocked`: why nothing at all may be created (configuration rejected).
    `pressure`: the host's PSI reading (None: no PSI), `pressure_paused` the resources the
    last plan paused for it (vac.cycle.gate.pressure_stop); the Plan says which are now.
    `shed_state`: shedding's (vac.cycle.shedding), which the Plan gives back. `disk`: the
    host's free space and the machines' scratch (None: no stop for it); the Plan's disk_stop
    says why it stopped creation. `memory`: the host's MemAvailable and the machines' usage
    (None: no stop for it; the rule is off unless memory_overcommit is set), memory_stop why.
    """
    settings = config.settings
    scan = _scan(config.machinetypes, observed, settings.shutdown_time, now, daemon_started)
    verdict = _yield(settings, scan, yield_state, owner, now)
    shed = _shed(settings, scan, pressure, shed_state, now)
    held = gate.waiting_reasons(waiting or {})
    creatable = {n: mt for n, mt in config.machinetypes.items() if n not in (waiting or {})}
    book = Shares(creatable, census, rng, settings.hs06_per_processor)
    for name, part, abort_time in scan.ended:
        book.ended(name, part, abort_time)
    squeezed, paused = gate.pressure_stop(settings, pressure, pressure_paused)
    budget = diskgate.Budget(settings, disk)
    short = budget.stop()
    room = memorygate.Budget(settings, memory, [(o, mt) for o, _, mt in scan.kept.values()])
    hold = blocked or gate.yield_hold(verdict) or shed.hold or squeezed or short
    creates, idle = _fill(config, scan, book, load, now, hold, held, (room, budget))
    counts = Counts(scan.machines, len(observed), scan.processors, settings.total_processors,
                    scan.hs06)
    return Plan(heartbeats=tuple(scan.heartbeats), lower_shutdown=tuple(scan.lowers),
                destroys=tuple(scan.destroys), finishes=tuple(scan.finishes),
                creates=tuple(creates), idle=tuple(idle), counts=counts,
                cvmfs_repositories=tuple(sorted(scan.cvmfs)), notes=tuple(book.notes(now)),
                yield_state=verdict.state if yielding.enabled(settings) else None,
                pressure_paused=paused, shed_state=shed.state, pressure=pressure,
                disk_stop=short or budget.refused, disk=diskgate.as_dict(settings, disk),
                memory_stop=room.refused)


# The slot scan ---------------------------------------------------------------------------

def _scan(machinetypes: Mapping[str, MachineType], observed: Sequence[Observed],
          shutdown_time: Optional[int], now: float, daemon_started: float) -> _Scan:
    scan = _Scan()
    ordered = observed if _in_order(observed) else sorted(observed, key=_ordinal)
    for obs in ordered:
        if obs.machinetype is None or obs.finished:
            scan.free.append(obs.slot)  # empty, or finished (even if it never started)
            continue
        mt = machinetypes.get(obs.machinetype)
        state = obs.state
        if state is _RUNNING:
            destroy = _running(obs, mt, scan, shutdown_time, now, daemon_started)
        elif state is _SHUTDOWN:
            scan.finishes.append(Finish(obs.slot.name))
            scan.free.append(obs.slot)
            continue
        elif state is _PAUSED:
            destroy = Destroy(obs.slot.name, None, "paused")
        elif state is _STARTING:
            destroy = Destroy(obs.slot.name, CREATION_NOT_FINISHED,
                              "creation began in an earlier cycle and did not finish")
        else:  # Unknown or Zombie: leave it alone, keep its processors counted
            scan.processors += obs.processors
            if obs.shutdown_time is not None:
                scan.superslots[obs.shutdown_time] = \
                    scan.superslots.get(obs.shutdown_time, 0) + obs.processors
            continue
        if destroy is not None:
            scan.destroys.append(destroy)
            scan.ended.append(_ended(obs, mt, destroy, now))
            scan.free.append(obs.slot)
    return scan


def _ordinal(obs: Observed) -> int:
    return obs.slot.ordinal


def _in_order(observed: Sequence[Observed]) -> bool:
    return all(observed[i].slot.ordinal < observed[i + 1].slot.ordinal
               for i in range(len(observed) - 1))


def _running(obs: Observed, mt: Optional[MachineType], scan: _Scan,
             shutdown_time: Optional[int], now: float,
             daemon_started: float) -> Optional[Destroy]:
    """Heartbeat, lower the shutdown time, then destroy if past it or if the rule says so."""
    name = obs.slot.name
    scan.heartbeats.append(Heartbeat(name, obs.cpu_seconds))
    end = obs.shutdown_time
    if shutdown_time is not None and (end is None or shutdown_time < end):
        scan.lowers.append(LowerShutdown(name, shutdown_time))
        end = shutdown_time
    if end is not None and now > end:
        return Destroy(name, SHUTDOWN_TIME_REACHED, f"past its shutdown time {end}")
    message = _heartbeat_file_rule(obs, mt, now, daemon_started)
    if message is not None:
        return Destroy(name, message, f"{message[4:]} ({mt.heartbeat_file})")
    grace = mt.shutdown_message_grace_seconds if mt is not None else None
    if grace is not None and obs.shutdown_message_time is not None and \
            now >= obs.shutdown_message_time + grace:
        return Destroy(name, None, f"wrote its shutdown_message and still runs {grace} s later")
    scan.keep(obs, end, mt)
    return None


def _heartbeat_file_rule(obs: Observed, mt: Optional[MachineType], now: float,
                         daemon_started: float) -> Optional[str]:
    """The 700 message if the machine fails its machinetype's heartbeat_file rule."""
    if mt is None or not mt.heartbeat_file or mt.fizzle_seconds <= 0 or obs.started is None:
        return None
    if now <= obs.started + mt.fizzle_seconds or now <= daemon_started + mt.fizzle_seconds:
        return None
    if obs.heartbeat_file_mtime is None:
        return HEARTBEAT_NOT_CREATED
    if mt.heartbeat_seconds > 0 and now > obs.heartbeat_file_mtime + mt.heartbeat_seconds:
        return HEARTBEAT_NOT_UPDATED
    return None


def _ended(obs: Observed, mt: Optional[MachineType], destroy: Destroy,
           now: float) -> Tuple[str, Optional[Tuple[float, int, bool]], Optional[float]]:
    """(machinetype, its census part, abort time or None) of a machine destroyed now."""
    fizzle = mt.fizzle_seconds if mt is not None else 0
    message = outcome_message(obs.shutdown_message or destroy.message, obs.started, now, fizzle)
    return (obs.machinetype or "", contribution(obs, fizzle, now),
            now if is_abort(message) else None)


# Opportunistic mode (vac.cycle.yielding) -------------------------------------------------

def _yield(settings: Settings, scan: _Scan, state: Optional[yielding.YieldState],
           owner: Optional[yielding.Sample], now: float) -> yielding.Verdict:
    """Judge the owner's load; if a machine is due to yield, destroy the youngest kept one."""
    verdict = yielding.judge(settings, state or yielding.YieldState(), owner, now)
    victim = yielding.youngest([o for o, _, _ in scan.kept.values()]) \
        if verdict.yield_now else None
    if victim is None:
        return verdict
    name = victim.slot.name
    _take(scan, victim, yielding.message(settings, verdict.state, now), now)
    state = yielding.yielded(settings, verdict.state, name, now)
    return yielding.Verdict(state, yield_now=True,
                            hold=yielding.hold_reason(settings, state, now))


def _shed(settings: Settings, scan: _Scan, reading: Optional[PressureReading],
          state: Optional[shedding.ShedState], now: float) -> shedding.Verdict:
    """Shedding: if memory has been short for the grace, destroy the youngest kept machine."""
    verdict = shedding.judge(settings, state or shedding.ShedState(), reading, now)
    victim = yielding.youngest([o for o, _, _ in scan.kept.values()]) \
        if verdict.shed_now else None
    if victim is None:
        return verdict
    _take(scan, victim, shedding.message(settings, verdict.state, now), now)
    return shedding.Verdict(shedding.shed(verdict.state, victim.slot.name, now),
                            shed_now=True, hold=verdict.hold)


def _take(scan: _Scan, victim: Observed, message: str, now: float) -> None:
    """Destroy a kept machine with this message after all; its slot becomes free."""
    destroy = Destroy(victim.slot.name, message, message[4:])
    mt = scan.kept[victim.slot.name][2]
    scan.release(victim.slot.name)
    scan.destroys.append(destroy)
    scan.ended.append(_ended(victim, mt, destroy, now))
    _insert_free(scan, victim.slot)


def _insert_free(scan: _Scan, slot: Slot) -> None:
    """Add a slot to the free ones, which stay in slot order."""
    at = next((i for i, s in enumerate(scan.free) if s.ordinal > slot.ordinal), len(scan.free))
    scan.free.insert(at, slot)


# Creation ----------------------------------------------------------------------------------

def _fill(config: Config, scan: _Scan, shares: Shares, load: float, now: float,
          hold: Optional[IdleReason] = None,
          held: Sequence[IdleReason] = (),
          budgets: Sequence = ()) -> Tuple[List[Create], List[Idle]]:
    """Create in the lowest free slots while the gate, the cap and the shares allow.

    `hold` stops all creation first (configuration, yielding); `held` are the machinetypes
    waiting for their backend, added to whatever else keeps a slot empty; `budgets` (memory's,
    free disk space's) let each machine chosen in only if each in turn allows it too."""
    settings = config.settings
    per = settings.processors_per_superslot
    running = scan.processors
    superslots = dict(scan.superslots)
    incomplete = sorted(t for t, n in superslots.items() if n % per) if per > 1 else []
    creates: List[Create] = []
    reason: Optional[IdleReason] = None
    for slot in scan.free:
        reason = gate.creation_stop(settings, hold, load, running, now, scan.processors,
                                len(creates))
        if reason is None:
            ordered, why = shares.ordered(now, settings.shutdown_time)
            reason = None if ordered else gate.none_eligible(config, why, held)
        if reason is None:
            choice, nothing = choose(ordered, ((t, superslots[t]) for t in incomplete),
                                     settings.total_processors - running, per, now)
            reason = IdleReason(planfile.NO_ROOM, nothing) if nothing else None
        if reason is None:
            reason = next((r for r in (b.admit(choice.machinetype, choice.processors)
                                       for b in budgets) if r is not None), None)
        if reason is not None:
            reason = gate.with_held(reason, held)
            break
        creates.append(Create(slot, choice.machinetype.name, choice.processors,
                              choice.shutdown_time))
        running += choice.processors
        shares.planned(choice.machinetype.name, choice.processors)
        if per > 1:
            _add_to_superslot(superslots, incomplete, choice.shutdown_time, choice.processors,
                              per)
    idle = [Idle(slot, reason) for slot in scan.free[len(creates):] if reason is not None]
    return creates, idle


def _add_to_superslot(superslots: Dict[int, int], incomplete: List[int], when: int,
                      processors: int, per: int) -> None:
    before = superslots.get(when, 0)
    superslots[when] = before + processors
    was, now_incomplete = before % per != 0, superslots[when] % per != 0
    if was and not now_incomplete:
        incomplete.remove(when)
    elif now_incomplete and not was:
        bisect.insort(incomplete, when)


# Expiry of machine directories ------------------------------------------------------------

def expired(dirs: Sequence[Tuple[str, str, Optional[float]]],
            machinetypes: Mapping[str, MachineType], now: float,
            keep: Sequence[str] = ()) -> List[str]:
    """Machine directories older than their machinetype's machines_dir_days.

    `dirs` holds (path, machinetype, heartbeat mtime or None). Age counts from the last
    heartbeat, else from the created time in the directory name, so failed creations expire
    too (the original never expired them). Unknown machinetypes keep 3 days; days <= 0 keeps
    forever. Paths in `keep` (directories that slots still point at) are never expired.
    """
    kept = set(keep)
    result = []
    for path, machinetype, heartbeat in dirs:
        if path in kept:
            continue
        mt = machinetypes.get(machinetype)
        days = mt.machines_dir_days if mt is not None else DEFAULT_MACHINES_DIR_DAYS
        if days <= 0:
            continue
        last = heartbeat if heartbeat is not None else _created_from_name(path)
        if last is not None and last < now - days * 86400:
            result.append(path)
    return result


def _created_from_name(path: str) -> Optional[int]:
    head = os.path.basename(path.rstrip("/")).split("_", 1)[0]
    return int(head) if head.isdigit() else None
