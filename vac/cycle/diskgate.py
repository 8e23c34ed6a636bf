# SPDX-License-Identifier: BSD-2-Clause
"""Admission by free disk space (pure): "thin, but safe".

A machine's scratch is thin (a sparse file, nothing reserved up front), and so is a VM's disk
file, so admission looks at the real free space instead. Each filesystem watched (the state
directory's, the scratch pool's, and those of the places the backends name: the Docker data
root, Podman's storage; vac.host.diskspace reads them, one entry per filesystem) has a floor,
the larger of disk_floor_gb and disk_floor_fraction of its size. No machine is created while a
filesystem has less free than

    floor + (what the running machines may still grow into there
             + the scratch of the machines planned this cycle, this one included, on the
               scratch pool's filesystem)
            / disk_overcommit

What the running machines may still grow into: the free space inside each mounted scratch
(on the scratch pool's filesystem), and each running VM's disk files' size less what is
allocated to them (on the filesystem of their directory, the state directory's tmp/ for
libvirt; a thick logical volume counts nothing). When the scratch is made in a thin pool
(lvm-thin), the pool is the place the scratch grows in, read through LVM
(vac.machine.thinpool), with its other thin volumes' room (VM disks) as its growth. A filesystem where nothing grows needs its floor
alone. A planned container machine's scratch is its size (disk_gb_per_processor x
processors) when the host gives containers a scratch; a planned VM's disk is not counted (it
starts empty and is counted from the next cycle on).

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
        scratch_growth = self.reading.scratch_growth() + self.planned + adding
        reasons = [r for r in (self._short(fs, fs.growth + (scratch_growth if fs.scratch else 0))
                               for fs in self.reading.filesystems) if r is not None]
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
        """Why this filesystem stops creation, with `growth` bytes that may still grow in it;
        None if it does not."""
        s = self.settings
        floor = floor_bytes(s, fs)
        counted = growth / s.disk_overcommit
        if fs.free >= floor + counted:
            return None
        text = (f"disk: {fs.label} has {_gb(fs.free)} GB free < {_gb(floor)} GB floor "
                f"(disk_floor_gb {s.disk_floor_gb:g}, disk_floor_fraction "
                f"{s.disk_floor_fraction:g} of {_gb(fs.total)} GB)")
        if counted:
            what = "scratch and disk files" if fs.growth else "scratch"
            text += (f" + {_gb(growth)} GB the machines' {what} may grow into / "
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
    what it holds, free, size and floor bytes, what disk files may still grow by there and
    whether the scratch grows there; the bytes
    the machines' scratch and disk files may still grow into, all together; the bytes each
    machine's scratch uses, per machine directory. None for None."""
    if reading is None:
        return None
    return {"filesystems": [{"path": fs.path, "holds": list(fs.names), "free_bytes": fs.free,
                             "size_bytes": fs.total, "floor_bytes": floor_bytes(settings, fs),
                             "growth_bytes": fs.growth, "scratch": fs.scratch}
                            for fs in reading.filesystems],
            "scratch_growth_bytes": reading.growth(),
            "scratch_used_bytes": {name: sc.used for name, sc in sorted(reading.scratches.items())}}


def short_filesystems(reason: Optional[IdleReason]) -> List[str]:
    """The paths of the filesystems a disk stop names (none for another reason)."""
    if reason is None:
        return []
    return [r.resource for r in reason.each() if r.kind == planfile.DISK and r.resource]


def _gb(size: float) -> str:
    return f"{size / GB:.1f}"
