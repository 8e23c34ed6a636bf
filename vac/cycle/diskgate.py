# SPDX-License-Identifier: BSD-2-Clause
"""Admission by free disk space (pure): "thin, but safe".

A machine's scratch is thin (a sparse file, nothing reserved up front), so admission looks at
the real free space instead. Each filesystem watched (the state directory's, the scratch
pool's, the Docker data root's: vac.host.diskspace reads them, one entry per filesystem) has
a floor, the larger of disk_floor_gb and disk_floor_fraction of its size. No machine is
created while a filesystem has less free than

    floor + (what the running machines' scratch may still grow into
             + the scratch of the machines planned this cycle, this one included)
            / disk_overcommit

where the growth counts only on the filesystem the scratch pool lives on (the state
directory's and the Docker data root's, if elsewhere, need their floor alone). A machine's
growth is the free space inside its mounted scratch; a planned container machine's is its
scratch size (disk_gb_per_processor x processors) when the host gives containers a scratch.
VMs' disks are not counted.

There is no hysteresis: creation resumes as soon as the space is back above the mark (free
space moves slowly and every creation raises the mark by its own scratch, so it does not
flap the way pressure readings do). Nothing here stops the management of running machines:
the heartbeats, destroys and finishes go on, whatever the reading. No reading (a factory
under test, or nothing could be read): no stop.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from vac import planfile
from vac.config import models
from vac.config.model import MachineType, Settings
from vac.host.diskspace import DiskReading, Filesystem
from vac.machine import scratch
from vac.planfile import IdleReason

GB = 10 ** 9
CONTAINER_KINDS = (models.DOCKER_CONTAINER, models.APPTAINER_CONTAINER)


class Budget:
    """One plan's admission by free space: stop() before any creation, admit() for each
    machine chosen (it counts the machine's scratch when it is let in)."""

    def __init__(self, settings: Settings, reading: Optional[DiskReading]):
        self.settings = settings
        self.reading = reading
        self.planned = 0      # bytes of scratch of the machines planned so far
        self.refused: Optional[IdleReason] = None   # why admit() last said no

    def stop(self, adding: int = 0) -> Optional[IdleReason]:
        """Why no machine (needing `adding` bytes of scratch) may be created, or None."""
        if self.reading is None:
            return None
        growth = self.reading.growth() + self.planned + adding
        reasons = [r for r in (self._short(fs, growth) for fs in self.reading.filesystems)
                   if r is not None]
        return planfile.combined(reasons) if reasons else None

    def admit(self, machinetype: MachineType, processors: int) -> Optional[IdleReason]:
        """None and the machine's scratch counted, or why it may not be created."""
        need = new_scratch(self.settings, self.reading, machinetype, processors)
        reason = self.stop(need)
        if reason is None:
            self.planned += need
        self.refused = reason or self.refused
        return reason

    def _short(self, fs: Filesystem, growth: int) -> Optional[IdleReason]:
        s = self.settings
        floor = floor_bytes(s, fs)
        counted = growth / s.disk_overcommit if fs.scratch else 0.0
        if fs.free >= floor + counted:
            return None
        text = (f"disk: {fs.label} has {_gb(fs.free)} GB free < {_gb(floor)} GB floor "
                f"(disk_floor_gb {s.disk_floor_gb:g}, disk_floor_fraction "
                f"{s.disk_floor_fraction:g} of {_gb(fs.total)} GB)")
        if counted:
            text += (f" + {_gb(growth)} GB the machines' scratch may grow into / "
                     f"disk_overcommit {s.disk_overcommit:g}")
        return IdleReason(planfile.DISK, text, resource=fs.path, value=float(fs.free))


def floor_bytes(settings: Settings, fs: Filesystem) -> int:
    """The filesystem's floor: disk_floor_gb or disk_floor_fraction of it, the larger."""
    return int(max(settings.disk_floor_gb * GB, settings.disk_floor_fraction * fs.total))


def new_scratch(settings: Settings, reading: Optional[DiskReading], machinetype: MachineType,
                processors: int) -> int:
    """Bytes of scratch a new machine of this machinetype would be allowed to grow into."""
    if reading is None or not reading.scratch_made or \
            models.kind(machinetype.machine_model) not in CONTAINER_KINDS:
        return 0
    return scratch.limit_bytes(machinetype.disk_gb_per_processor,
                               settings.disk_gb_per_processor, processors) or 0


def as_dict(settings: Settings, reading: Optional[DiskReading]) -> Optional[Dict[str, Any]]:
    """A reading as plain data (plan.json, metrics, the status page): each filesystem's path,
    what it holds, free, size and floor bytes and whether the scratch grows there; the bytes
    the machines' scratch uses and may still grow into, in all and per machine directory.
    None for None."""
    if reading is None:
        return None
    return {"filesystems": [{"path": fs.path, "holds": list(fs.names), "free_bytes": fs.free,
                             "size_bytes": fs.total, "floor_bytes": floor_bytes(settings, fs),
                             "scratch": fs.scratch} for fs in reading.filesystems],
            "scratch_growth_bytes": reading.growth(),
            "scratch_used_bytes": {name: sc.used for name, sc in sorted(reading.scratches.items())}}


def short_filesystems(reason: Optional[IdleReason]) -> List[str]:
    """The paths of the filesystems a disk stop names (none for another reason)."""
    if reason is None:
        return []
    return [r.resource for r in reason.each() if r.kind == planfile.DISK and r.resource]


def _gb(size: float) -> str:
    return f"{size / GB:.1f}"
