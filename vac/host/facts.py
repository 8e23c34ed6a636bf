# SPDX-License-Identifier: BSD-2-Clause
"""Facts about this host: name, processors, users, volume groups, load, memory, disk.

Parsers are pure functions of file text; readers take the root to read under so tests can
point them at a fake /proc.
"""
from __future__ import annotations

import os
import pwd
import socket
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Tuple

from vac.host import lvm


def count_processors(cpuinfo_text: str) -> int:
    """Number of `processor\\t:` lines in /proc/cpuinfo text (the original's count)."""
    return sum(1 for line in cpuinfo_text.splitlines()
               if line.startswith("processor") and line[9:].lstrip(" \t").startswith(":"))


def read_processors(proc_root: str = "/proc") -> int:
    with open(os.path.join(proc_root, "cpuinfo")) as f:
        return count_processors(f.read()) or 1


def parse_loadavg(text: str) -> Tuple[float, float, float]:
    parts = text.split()
    return float(parts[0]), float(parts[1]), float(parts[2])


def read_loadavg(proc_root: str = "/proc") -> Tuple[float, float, float]:
    with open(os.path.join(proc_root, "loadavg")) as f:
        return parse_loadavg(f.read())


def host_fqdn() -> str:
    """This host's name as the original took it (uname nodename), falling back to getfqdn."""
    name = os.uname().nodename
    if "." not in name:
        fq = socket.getfqdn(name)
        if "." in fq and not fq.startswith("localhost"):
            return fq.lower()
    return name.lower()


def user_uid(name: str) -> Optional[int]:
    """The uid of a local user, or None if there is no such user."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def volume_group_exists(name: str, run: Optional[Callable[..., Any]] = None) -> bool:
    """True if LVM reports a volume group of this name (vac.host.lvm.group_exists: `vgs`, not
    the /dev/<vg> directory, which an empty group has not). False without LVM's tools."""
    return lvm.group_exists(name, run)


def parse_meminfo(text: str) -> dict:
    """/proc/meminfo as {key: kB}."""
    found = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            found[key.strip()] = int(parts[0])
    return found


@dataclass(frozen=True)
class HostFacts:
    """What configuration validation needs to know about the host; injectable in tests."""

    fqdn: str
    processors: int
    uid_of: Callable[[str], Optional[int]] = field(default=user_uid, compare=False)
    vg_exists: Callable[[str], bool] = field(default=volume_group_exists, compare=False)

    @classmethod
    def read(cls) -> HostFacts:
        return cls(fqdn=host_fqdn(), processors=read_processors())
