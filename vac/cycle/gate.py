# SPDX-License-Identifier: BSD-2-Clause
"""The creation gate and why free slots stay empty, as idle reasons (pure).

The gate (in the original's order: overload, shutdown_time, draining, total_processors)
and the other stops of creation (a configuration that is rejected or missing, opportunistic
mode's pause, host pressure, max_creations_per_cycle, machinetypes waiting for their
backend) each give a vac.planfile.IdleReason: its kind, the machinetype and the time it ends
where there is one, and its text for people. The planner asks; nothing here reads a file or a
clock.

Admission by pressure (PSI, vac.host.pressure): creation pauses while a resource's avg10 is
above its threshold (pressure_cpu_some, pressure_memory_some, pressure_io_full), and resumes
only once it is down to RESUME_FRACTION of it (hysteresis: the resources paused are the
planner's input and output, kept by the factory between cycles). It adds to the load average
gate (overload_per_processor), which stays: either one stops creation. A host without PSI
gives no reading, and the load average gate decides alone, as before. PSI's memory `some`
stays near 0 without swap until the RAM is all but gone, so admission by memory
(memory_overcommit: MemAvailable against the machines' limits) is vac.cycle.memorygate, a
budget the planner asks for each machine it chooses.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, List, Mapping, Optional, Sequence, Tuple

from vac import planfile
from vac.config.model import Config, Settings
from vac.config.options import PRESSURE_OPTIONS
from vac.cycle import yielding
from vac.host.pressure import Reading
from vac.planfile import IdleReason

NO_MACHINETYPES = "no machinetypes configured"
RESUME_FRACTION = 0.75   # a paused resource resumes at 3/4 of its threshold


def creation_stop(settings: Settings, hold: Optional[IdleReason], load: float, running: int,
                  now: float, kept: int, created: int) -> Optional[IdleReason]:
    """Why no further machine may be created now, whatever the machinetype, or None.

    `running` counts the processors kept and planned so far, `kept` those kept alone;
    `created` is how many creations are planned already."""
    if hold is not None and hold.kind in (planfile.CONFIG_REJECTED, planfile.NOT_CONFIGURED):
        return hold
    # The load average cannot see the machines started this cycle yet: each is taken to
    # add its processors to the reading, so the gate sees its own starts.
    reason = gate(settings, load, running, now, started=running - kept) or hold
    if reason is None and created >= settings.max_creations_per_cycle:
        reason = IdleReason(planfile.MAX_CREATIONS, "max_creations_per_cycle reached "
                                                    f"({settings.max_creations_per_cycle})")
    return reason


def yield_hold(verdict: yielding.Verdict) -> Optional[IdleReason]:
    """Opportunistic mode's pause or hold as an idle reason (until: the pause's end)."""
    if not verdict.hold:
        return None
    until = verdict.state.paused_until
    paused = until is not None and "paused until" in verdict.hold
    return IdleReason(planfile.YIELDING, verdict.hold, until=until if paused else None)


def pressure_stop(settings: Settings, reading: Optional[Reading],
                  paused: FrozenSet[str] = frozenset()
                  ) -> Tuple[Optional[IdleReason], FrozenSet[str]]:
    """Why creation pauses for the host's pressure (None: it does not), and the resources
    paused now. A resource pauses above its threshold, and a resource paused before stays
    paused until its avg10 is down to RESUME_FRACTION of the threshold. No reading (no PSI):
    no pause."""
    if reading is None:
        return None, frozenset()
    reasons = []
    for option, resource, line in PRESSURE_OPTIONS:
        limit = getattr(settings, option)
        value = reading.avg10(resource, line)
        if limit is None or value is None:
            continue
        resume = limit * RESUME_FRACTION
        if value > limit:
            text = f"{resource} pressure: {line} avg10 {value:.2f}% > {option} {limit:g}%"
        elif resource in paused and value > resume:
            text = (f"{resource} pressure: {line} avg10 {value:.2f}% not yet down to "
                    f"{resume:g}% ({option} {limit:g}% x {RESUME_FRACTION:g})")
        else:
            continue
        reasons.append(IdleReason(planfile.PRESSURE, text, resource=resource, value=value))
    now = frozenset(r.resource for r in reasons if r.resource is not None)
    return (planfile.combined(reasons) if reasons else None), now


def waiting_reasons(waiting: Mapping[str, str]) -> List[IdleReason]:
    """One reason per distinct backend trouble, naming the machinetypes that wait for it."""
    groups: Dict[str, List[str]] = {}
    for name, why in waiting.items():
        groups.setdefault(why, []).append(name)
    reasons = []
    for why, names in sorted(groups.items()):
        names.sort()
        each = tuple(IdleReason(planfile.BACKEND_WAITING, f"{why} ({n} waiting)", machinetype=n)
                     for n in names)
        reasons.append(each[0] if len(each) == 1 else IdleReason(
            planfile.BACKEND_WAITING, f"{why} ({', '.join(names)} waiting)", parts=each))
    return reasons


def with_held(reason: IdleReason, held: Sequence[IdleReason]) -> IdleReason:
    """The reason with the waiting machinetypes' added (not to a configuration's hold)."""
    if not held or reason.kind in (planfile.CONFIG_REJECTED, planfile.NOT_CONFIGURED,
                                   planfile.BACKEND_WAITING):
        return reason
    return planfile.combined([reason, *held])


def gate(settings: Settings, measured: float, running: int, now: float,
         started: int = 0) -> Optional[IdleReason]:
    """Why no (further) machine may be created, or None (checked in the original's order).

    The load is the measured load average plus the processors started since it was read.
    """
    over = settings.overload_per_processor
    load = measured + started
    shown = f"{load:.2f}" + (f" ({measured:.2f} + {started} started this cycle)"
                             if started else "")
    if running > 4 and load > over * running:
        return IdleReason(planfile.OVERLOAD, f"overload: load {shown} > overload_per_processor "
                                             f"{over:g} x {running} running processors")
    if load > over * settings.host_processors:
        return IdleReason(planfile.OVERLOAD, f"overload: load {shown} > overload_per_processor "
                                             f"{over:g} x {settings.host_processors} processors")
    if settings.shutdown_time is not None and now > settings.shutdown_time:
        return IdleReason(planfile.SHUTDOWN_TIME, f"after shutdown_time {settings.shutdown_time}")
    if settings.draining:
        return IdleReason(planfile.DRAINING, "draining")
    if running >= settings.total_processors:
        return IdleReason(planfile.TOTAL_PROCESSORS,
                          f"total_processors limit: {running} of {settings.total_processors} "
                          "processors in use")
    return None


def none_eligible(config: Config, reasons: List[IdleReason],
                  held: Sequence[IdleReason]) -> IdleReason:
    """Why no machinetype may start: none configured, none with a share, each one's reason,
    or (when every machinetype with a share waits for its backend) the backends'."""
    if not config.machinetypes:
        return IdleReason(planfile.NO_MACHINETYPES, NO_MACHINETYPES)
    if not reasons and held:
        return planfile.combined(list(held))
    if not reasons:
        return IdleReason(planfile.NO_SHARE, "no machinetype has a share")
    return planfile.combined(reasons)
