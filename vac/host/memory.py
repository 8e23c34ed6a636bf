# SPDX-License-Identifier: BSD-2-Clause
"""The host's memory as admission by memory sees it (vac.cycle.memorygate): the host's
MemAvailable (/proc/meminfo) and what each running machine uses now, its own cgroup's
memory.current on cgroup v2 (the cgroup whose pressure vac.host.machinepressure reads).

Both are cheap: one small file for the host and one per machine. Everything read is treated as
hostile: a value that is not a plain count of bytes is no value. Without a cgroup2 mount
holding the machine's cgroup (cgroup v1), without the memory controller there (a hybrid
host's unified hierarchy), or where the backend cannot name the cgroup, a machine's usage is
unknown (None), never 0: memorygate says what an unknown usage counts as.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from vac import fsutil
from vac.errors import VacError
from vac.host import cgroups, facts, pressure

MIB = 1024 * 1024
FILE_LIMIT = 64 * 1024     # /proc/meminfo is about 1.5 kB
CURRENT_LIMIT = 64         # memory.current is one number
CURRENT = "memory.current"

MachineKey = Tuple[str, int]   # (machine name, its created time): a slot's next machine differs


@dataclass(frozen=True)
class MemoryReading:
    """The host's MemAvailable in bytes, and the bytes each running machine was last seen to
    use (by machine name and created time; absent: unknown)."""

    available: int
    usage: Mapping[MachineKey, int] = field(default_factory=dict)

    def used_by(self, name: str, created: Optional[int]) -> Optional[int]:
        """The bytes this machine uses, or None if unknown."""
        return self.usage.get((name, created)) if created is not None else None


def parse_available(text: str) -> Optional[int]:
    """MemAvailable of /proc/meminfo's text in bytes, or None (a kernel before 3.14 has none)."""
    kb = facts.parse_meminfo(text).get("MemAvailable")
    return kb * 1024 if kb is not None else None


def read_available(proc_root: str = "/proc") -> Optional[int]:
    """The host's MemAvailable in bytes, or None if it cannot be read."""
    try:
        text = fsutil.read_optional(os.path.join(proc_root, "meminfo"), FILE_LIMIT)
    except (OSError, VacError):
        return None
    return parse_available(text) if text else None


def parse_current(text: str) -> Optional[int]:
    """memory.current's text as bytes, or None if it is not one plain count."""
    word = text.strip()
    return int(word) if word.isdigit() and len(word) <= 20 else None


def cgroup_usage(cgroup_path: Optional[str],
                 hierarchies: Optional[cgroups.Hierarchies] = None) -> Optional[int]:
    """The bytes a machine's cgroup ("/vac/x") uses now (memory.current in the cgroup2
    mount), or None: no path, no cgroup2 mount holding it, no memory controller, unreadable."""
    directory = pressure.cgroup_dir(cgroup_path, hierarchies) if cgroup_path else None
    if directory is None:
        return None
    try:
        text = fsutil.read_optional(os.path.join(directory, CURRENT), CURRENT_LIMIT)
    except (OSError, VacError):
        return None
    return parse_current(text) if text else None
