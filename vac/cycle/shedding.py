# SPDX-License-Identifier: BSD-2-Clause
"""Shedding before the OOM killer, the decision (pure): when the host's memory is so short that
its tasks all stall, Vac destroys a machine of its own before the kernel kills a payload (or
vacd) at random.

Off unless `shed_memory_full` is set. Each cycle brings the host's PSI reading
(vac.host.pressure); the ShedState remembers since when memory `full` avg10 has been above
`shed_memory_full` without a break:

    above for shed_grace_seconds  ->  the youngest running machine is destroyed with
        SHED_MESSAGE and the grace starts again: if memory stays short, the next youngest goes
        one grace later
    above at all                  ->  nothing is created (idle reason kind "pressure")
    no reading (no PSI)           ->  nothing is shed, the grace starts again

The youngest, not the one whose own cgroup shows the most memory pressure: a machine's own
pressure (vac.host.machinepressure) is read only where its cgroup is in a cgroup2 mount
(cgroup v1 keeps none, and a backend may not name the cgroup), the youngest has done the least
work, and it is the one admitted last, when the host had the least room; it is
also the rule opportunistic mode follows, so the two agree on the order machines go.

The message's code is 100, "shutdown as requested by the VM's host/hypervisor", as a yield's:
the host is short, the payload is not wrong, so it is no abort (>= 300) and causes no backoff
of its machinetype. Nothing here reads a file or a clock.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from vac import planfile
from vac.config.model import Settings
from vac.host.pressure import Reading
from vac.planfile import IdleReason

SHED_CODE = 100
RESOURCE, LINE = "memory", "full"


@dataclass(frozen=True)
class ShedState:
    """What shedding keeps from cycle to cycle (in vacd's memory)."""

    above_since: Optional[float] = None   # memory full avg10 above shed_memory_full since
    value: Optional[float] = None         # the last reading's memory full avg10
    last_shed: Optional[float] = None
    last_machine: str = ""
    sheds: int = 0


@dataclass(frozen=True)
class Verdict:
    """This cycle's decision: the state, whether a machine is shed now, why creation stops."""

    state: ShedState
    shed_now: bool = False
    hold: Optional[IdleReason] = None


def enabled(settings: Settings) -> bool:
    return settings.shed_memory_full is not None


def judge(settings: Settings, state: ShedState, reading: Optional[Reading],
          now: float) -> Verdict:
    """Fold this cycle's reading into the state: shed now, hold creation, or neither."""
    value = reading.avg10(RESOURCE, LINE) if reading is not None else None
    if not enabled(settings) or value is None or value <= settings.shed_memory_full:
        return Verdict(replace(state, above_since=None, value=value))
    since = state.above_since if state.above_since is not None else now
    state = replace(state, above_since=since, value=value)
    due = now - since >= settings.shed_grace_seconds
    return Verdict(state, shed_now=due, hold=hold_reason(settings, state))


def hold_reason(settings: Settings, state: ShedState) -> IdleReason:
    """Creation stopped while memory is short enough to shed."""
    return IdleReason(planfile.PRESSURE,
                      f"{RESOURCE} pressure: {LINE} avg10 {state.value or 0.0:.2f}% > "
                      f"shed_memory_full {settings.shed_memory_full:g}% (shedding machines)",
                      resource=RESOURCE, value=state.value)


def shed(state: ShedState, machine: str, now: float) -> ShedState:
    """The state after `machine` was shed now: the grace starts again."""
    return replace(state, above_since=now, last_shed=now, last_machine=machine,
                   sheds=state.sheds + 1)


def message(settings: Settings, state: ShedState, now: float) -> str:
    """The coded shutdown_message of a machine shed now."""
    since = state.above_since if state.above_since is not None else now
    return (f"{SHED_CODE} Vac sheds the machine: the host is short of memory ({RESOURCE} "
            f"{LINE} avg10 {state.value or 0.0:.2f}% above shed_memory_full "
            f"{settings.shed_memory_full:g}% for {int(now - since)} s)")
