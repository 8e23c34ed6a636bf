# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s disk check: the free space of each filesystem that admission by free disk
space watches (the state directory's, the scratch pool's and the Docker data root's, as the
last cycle found it in plan.json), against its floor and what the machines' scratch may still
grow into (vac.cycle.diskgate, the rule vacd applies).

    ok    each filesystem's free bytes, size and floor; creation is not stopped for them
    warn  a filesystem is short: vacd creates no machine until space is freed (its words), or
          a place could not be read
"""
from __future__ import annotations

from typing import List, Optional

from vac import planfile
from vac.config.model import Settings
from vac.cycle import diskgate
from vac.host import diskspace
from vac.machine import scratch
from vac.ops.checks import OK, WARN, Check

NAME = "disk"
GB = 10 ** 9
FIX = ("free space there (or move the state directory, the scratch pool or the Docker data "
       "root to a larger filesystem), or lower disk_floor_gb / disk_floor_fraction, or raise "
       "disk_overcommit")


def host_disk(settings: Settings, made: bool = False) -> List[Check]:
    """One line: the watched filesystems' free space and whether it stops creation now.
    `made`: whether new container machines get a scratch on this host."""
    state = settings.paths.state_dir
    reading = diskspace.read(state, scratch.pool(state), scratch.mounted(),
                             docker_root(settings), made)
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
        said += f"; the machines' scratch may still grow {reading.growth() / GB:.1f} GB"
    if reading.problems:
        return [Check(NAME, WARN, f"{said}; not watched: {'; '.join(reading.problems)}",
                      "see the errors")]
    return [Check(NAME, OK, said)]


def docker_root(settings: Settings) -> Optional[str]:
    """The Docker data root the last cycle watched (plan.json), if any."""
    record = planfile.read(settings.paths.plan)
    for fs in ((record.disk or {}).get("filesystems", ()) if record is not None else ()):
        if diskspace.DOCKER in fs.get("holds", ()):
            return fs["path"]
    return None
