# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s disk check: the free space of each filesystem that admission by free disk
space watches (the state directory's, the scratch pool's, and the places of the backends the
last cycle found in plan.json under every label: "docker data root", "podman storage",
"libvirt disk files"), against its floor and what the machines' scratch and disk files may
still grow into (the scratch read now, the disk files' room as the last cycle counted it;
vac.cycle.diskgate, the rule vacd applies).

    ok    each filesystem's free bytes, size and floor; creation is not stopped for them
    warn  a filesystem is short: vacd creates no machine until space is freed (its words), or
          a place could not be read
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Tuple

from vac import planfile
from vac.backends import scratchmount
from vac.config.model import Settings
from vac.cycle import diskgate, hostdisk
from vac.host import diskspace
from vac.ops.checks import OK, WARN, Check

NAME = "disk"
GB = 10 ** 9
FIX = ("free space there (or move the state directory, the scratch pool or the engine's data "
       "root to a larger filesystem), or lower disk_floor_gb / disk_floor_fraction, or raise "
       "disk_overcommit")


def host_disk(settings: Settings, made: bool = False) -> List[Check]:
    """One line: the watched filesystems' free space and whether it stops creation now.
    `made`: whether new container machines get a scratch on this host."""
    places, growing = recorded(settings)
    reading = hostdisk.read_with_pool(settings.paths.state_dir,
                                      scratchmount.mechanism(settings.volume_group,
                                                             settings.paths.state_dir), places,
                                      growing)
    reading = replace(reading, scratch_made=made)
    if not reading.filesystems:
        return [Check(NAME, WARN, "cannot read any watched filesystem: "
                                  + "; ".join(reading.problems), "see the errors")]
    stop = diskgate.Budget(settings, reading).stop()
    if stop is not None:
        return [Check(NAME, WARN, f"creation stops now: {stop.text}", FIX)]
    said = "; ".join(f"{fs.label}: {fs.free / GB:.1f} GB free of {fs.total / GB:.1f} GB "
                     f"(floor {diskgate.floor_bytes(settings, fs) / GB:.1f} GB)"
                     for fs in reading.filesystems)
    if reading.growth():
        said += (f"; the machines' scratch and disk files may still grow "
                 f"{reading.growth() / GB:.1f} GB")
    if reading.problems:
        return [Check(NAME, WARN, f"{said}; not watched: {'; '.join(reading.problems)}",
                      "see the errors")]
    return [Check(NAME, OK, said)]


def recorded(settings: Settings) -> Tuple[List[diskspace.Place], List[diskspace.Growing]]:
    """The backends' places the last cycle watched (plan.json), each path under every label
    it held there but the state directory's and the pool's (read here anyway), and the room
    of the disk files it counted on each filesystem."""
    record = planfile.read(settings.paths.plan)
    places: List[diskspace.Place] = []
    growing: List[diskspace.Growing] = []
    for fs in ((record.disk or {}).get("filesystems", ()) if record is not None else ()):
        places += [(label, fs["path"]) for label in fs.get("holds", ())
                   if label not in (diskspace.STATE, diskspace.POOL, diskspace.THIN)]
        if fs.get("growth_bytes") and diskspace.THIN not in fs.get("holds", ()):
            growing.append((fs["path"], fs["growth_bytes"]))
    return places, growing
