# SPDX-License-Identifier: BSD-2-Clause
"""/proc/self/mountinfo as fields: one list of whitespace-separated fields a mount (a path's
octal escapes are undone by unescape, vac.host.cgroups' own). The reader of the file for the
scratch mounts (vac.machine.scratch) and the filesystem under a path (vac.host.projquota)."""
from __future__ import annotations

from typing import List

from vac.host.cgroups import unescape_mount_field as unescape  # noqa: F401 (mountinfo's escapes)

MOUNTINFO = "/proc/self/mountinfo"


def mounts(mountinfo: str = MOUNTINFO) -> List[List[str]]:
    """Each mount's fields; [] when the file cannot be read."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
            return [line.split() for line in f.read().splitlines()]
    except OSError:
        return []
