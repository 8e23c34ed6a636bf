# SPDX-License-Identifier: BSD-2-Clause
"""Opportunistic mode, the measurement: the load from outside Vac's machines, and its file.

Each full cycle takes a Reading: the host's busy CPU seconds since boot (vac.host.hostcpu) and
the CPU seconds of every slot's machine, by machine directory. Two readings make a Sample:

    owner load = (host busy seconds - machines' CPU seconds) / interval / processors

where a machine's CPU seconds over the interval are its reading now less its reading then (all
of them if it started since); a machine that ended and whose slot was refilled in between
(vacd's event-driven refill) is taken at its final heartbeat, which finishing wrote. What runs
outside this factory's machines is what is left: the owner's processes, vacd itself, the
engines' daemons. A sample is not measured (owner None) if a machine's CPU was not known at
either end (its backend unavailable), if the host's counters went back (a reboot) or the clock
did: vac.cycle.yielding then never yields on it.

The YieldState and the last Reading are kept in Paths.yield_state (atomically rewritten each
cycle), so a restarted vacd measures from the last cycle of the one before and goes on with
its grace and pause.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from vac import fsutil
from vac.config.model import Config
from vac.cycle.observe import Observation
from vac.cycle.yielding import Sample, YieldState, enabled
from vac.host import hostcpu
from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)

STATE_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Reading:
    """The host's busy CPU seconds and each machine's CPU seconds at one time."""

    time: float
    busy_seconds: float
    processors: int
    machines: Dict[str, float] = field(default_factory=dict)   # machine dir path -> seconds
    unmeasured: Tuple[str, ...] = ()                            # slots whose CPU is unknown

    def to_json(self) -> Dict[str, Any]:
        return {"time": self.time, "busy_seconds": self.busy_seconds,
                "processors": self.processors, "machines": self.machines,
                "unmeasured": list(self.unmeasured)}

    @classmethod
    def from_json(cls, value: Any) -> Optional[Reading]:
        """The reading from its to_json() form, or None if it is not one."""
        try:
            machines = {str(k): float(v) for k, v in dict(value["machines"]).items()}
            return cls(time=float(value["time"]), busy_seconds=float(value["busy_seconds"]),
                       processors=max(1, int(value["processors"])), machines=machines,
                       unmeasured=tuple(str(s) for s in value.get("unmeasured") or ()))
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def take(observation: Observation, now: float, host: hostcpu.HostCpu) -> Reading:
    """This cycle's reading from its observation and the host's CPU counters."""
    return Reading(time=now, busy_seconds=host.busy_seconds, processors=host.processors,
                   machines=observation.machine_cpu(),
                   unmeasured=tuple(observation.unmeasured()))


def final_cpu(path: str) -> Optional[float]:
    """CPU seconds in a machine directory's heartbeat (final once it finished), or None."""
    return MachineDir(path).cpu_seconds if os.path.isdir(path) else None


def sample(before: Reading, now: Reading,
           ended: Callable[[str], Optional[float]] = final_cpu) -> Sample:
    """The load per processor over the interval between two readings."""
    interval = now.time - before.time
    busy = now.busy_seconds - before.busy_seconds
    problem = ""
    if interval <= 0:
        problem = "the clock went back"
    elif busy < 0:
        problem = "the host's CPU counters went back (rebooted?)"
    elif before.unmeasured or now.unmeasured:
        slots = sorted(set(before.unmeasured) | set(now.unmeasured))
        problem = f"CPU seconds unknown of {', '.join(slots[:3])}" + \
            (f" and {len(slots) - 3} more" if len(slots) > 3 else "")
    if problem:
        return Sample(before.time, now.time, None, problem=problem)
    machines = _machines_cpu(before, now, ended)
    per = interval * now.processors
    return Sample(before.time, now.time, max(0.0, busy - machines) / per,
                  machines=machines / per)


def _machines_cpu(before: Reading, now: Reading,
                  ended: Callable[[str], Optional[float]]) -> float:
    """CPU seconds all machines used between the two readings."""
    total = 0.0
    for path, cpu in now.machines.items():
        total += max(0.0, cpu - before.machines.get(path, 0.0))
    for path, cpu in before.machines.items():
        if path not in now.machines:
            last = ended(path)
            total += max(0.0, (last if last is not None else cpu) - cpu)
    return total


class OwnerLoad:
    """The cycle's side of opportunistic mode: reading, sample, state, file."""

    def __init__(self, host_cpu: Callable[[], hostcpu.HostCpu] = hostcpu.read):
        self.host_cpu = host_cpu
        self.state = YieldState()     # as the last cycle left it; refills use it
        self._reading: Optional[Reading] = None

    def measure(self, config: Config, observation: Observation,
                now: float) -> Tuple[Optional[YieldState], Optional[Sample]]:
        """The state the last cycle (or vacd) left and this cycle's sample; (None, None)
        when opportunistic mode is off."""
        if not enabled(config.settings):
            return None, None
        state, before = load(config.settings.paths.yield_state)
        try:
            self._reading = take(observation, now, self.host_cpu())
        except (OSError, ValueError) as e:
            log.warning("opportunistic mode: cannot read the host's CPU time: %s", e)
            self._reading = before
            return state, Sample(now, now, None, problem=str(e))
        if before is None:
            return state, None
        return state, sample(before, self._reading)

    def keep(self, config: Config, state: Optional[YieldState]) -> None:
        """Write the state this cycle decided, with its reading, before acting on it."""
        if state is None or not enabled(config.settings):
            return
        self.state = state
        body = {"state": state.to_json(),
                "reading": self._reading.to_json() if self._reading else None}
        fsutil.atomic_write(config.settings.paths.yield_state,
                            json.dumps(body, sort_keys=True, allow_nan=False))


def load(path: str) -> Tuple[YieldState, Optional[Reading]]:
    """The state and last reading kept in the file; a fresh state if there is none."""
    text = fsutil.read_optional(path, STATE_LIMIT)
    if not text:
        return YieldState(), None
    try:
        body = json.loads(text)
    except ValueError:
        log.warning("%s is not JSON; opportunistic mode starts afresh", path)
        return YieldState(), None
    if not isinstance(body, dict):
        return YieldState(), None
    return YieldState.from_json(body.get("state")), Reading.from_json(body.get("reading"))
