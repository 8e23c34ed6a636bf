# SPDX-License-Identifier: BSD-2-Clause
"""Admission by memory (pure): no machine is admitted while the running ones still have most
of their growth to come.

PSI's memory `some` (pressure_memory_some) stays near 0 on a host without swap until the RAM
is all but gone, too late to stop creating: a machine is admitted while the running ones have
yet to grow into their limits, and the OOM killer picks a payload later. So, when
`memory_overcommit` is set (a factor >= 1; 1 is no overcommit), a machine with memory limit L
(vac.config.model.MachineType.memory_mb: mb_per_processor x processors, the limit the
backends set) is created only if

    MemAvailable x memory_overcommit >= L + (the limits of the machines planned before it in
                                             this cycle) + sum over the running machines of
                                             max(0, limit - usage)

usage being the machine's own cgroup's memory.current (vac.host.memory; VMs and containers
alike). Each machine admitted adds its whole limit, so the machines created in one cycle are
counted against each other. The first refused leaves every free slot left empty with a
PRESSURE reason for the resource "memory" naming the figures (so `vac slots`, plan.json, the
status page and the metrics show it as they show a pause for pressure).

Unknown usage (cgroup v1, no memory controller on the cgroup2 mount, a backend that cannot
name the cgroup, or a machine not read yet, one created in the last cycle) counts the
machine's whole limit as still to come: we cannot see what it has taken, and that part of it
is also missing from MemAvailable, so it is counted twice; erring this way can cost a slot, the
other way an OOM kill. So a cgroup v1 host that sets it counts every running machine at its
whole limit (and what it uses twice), and leaves slots empty that it could fill: leave it unset
there, or raise it. A machine
whose machinetype is no longer configured has no limit known: it counts no room (what it uses
is already out of MemAvailable). Machines in an unknown state are left alone and count
nothing either.

There is no hysteresis: MemAvailable and memory.current are readings of what is held now, not
averages of stall time, and they do not flap the way PSI does; as a machine grows, its room
and MemAvailable fall together, so the balance holds still, and every admission raises the
bar by its own whole limit. Creation resumes when a machine ends or memory is given back. The
option unset (the default), or no MemAvailable reading: no stop, as before; the original's
configurations often carve limits well beyond what their payloads use and must not lose slots.
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

from vac import planfile
from vac.config.model import MachineType, Settings
from vac.host.memory import MIB, MemoryReading
from vac.machine.observed import Observed
from vac.planfile import IdleReason

RESOURCE = "memory"


def limit_bytes(machinetype: MachineType, processors: int) -> int:
    """A machine's memory limit in bytes."""
    return machinetype.memory_mb(processors) * MIB


def room(reading: MemoryReading, machine: Observed, machinetype: Optional[MachineType]
         ) -> Tuple[int, bool]:
    """(bytes the running machine may still take, whether its usage is unknown)."""
    if machinetype is None:
        return 0, False
    limit = limit_bytes(machinetype, machine.processors)
    used = reading.used_by(machine.name, machine.created)
    if used is None:
        return limit, True
    return max(0, limit - used), False


class Budget:
    """One plan's admission by memory: admit() for each machine chosen, in order (it counts
    the machine's limit when it is let in); `refused` says why it last said no."""

    def __init__(self, settings: Settings, reading: Optional[MemoryReading],
                 running: Iterable[Tuple[Observed, Optional[MachineType]]] = ()):
        self.factor = settings.memory_overcommit
        self.reading = reading if self.factor is not None else None
        self.running = self.room = self.unknown = 0
        self.planned = self.planned_count = 0
        self.refused: Optional[IdleReason] = None
        for machine, machinetype in running if self.reading is not None else ():
            left, unknown = room(self.reading, machine, machinetype)
            self.running += 1
            self.room += left
            self.unknown += unknown

    def admit(self, machinetype: MachineType, processors: int) -> Optional[IdleReason]:
        """None and the machine's limit counted, or why it may not be created."""
        if self.reading is None or self.factor is None:
            return None
        need = limit_bytes(machinetype, processors)
        if self.reading.available * self.factor >= need + self.planned + self.room:
            self.planned += need
            self.planned_count += 1
            return None
        self.refused = IdleReason(planfile.PRESSURE, self._text(need), resource=RESOURCE)
        return self.refused

    def _text(self, need: int) -> str:
        text = (f"memory: {_mib(self.reading.available)} MiB available x memory_overcommit "
                f"{self.factor:g} < {_mib(need)} MiB for a new machine")
        if self.planned_count:
            text += (f" + {_mib(self.planned)} MiB for the {self.planned_count} created "
                     "this cycle")
        if self.running:
            text += f" + {_mib(self.room)} MiB the {self.running} running may still take"
        if self.unknown:
            text += (f" ({self.unknown} of them with usage unknown, counted at their whole "
                     "limit)")
        return text


def _mib(size: float) -> str:
    return f"{size / MIB:.0f}"
