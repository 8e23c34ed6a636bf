# SPDX-License-Identifier: BSD-2-Clause
"""A Docker machine's own cgroup parent, in the form the engine's cgroup driver wants.

Each container gets a parent cgroup of its own, which keeps the container's CPU seconds after
the container's cgroup has gone (v1 cpuacct charges every ancestor, v2 flushes a removed child
into its parent). The engine makes it; Vac reads it and removes it once the machine is gone.

    cgroupfs driver   a path, /vac/docker-<machine dir>; removed with rmdir in every
                      hierarchy (vac.host.cgroups)
    systemd driver    a slice unit, vac-docker-<machine dir, escaped>.slice; a dash in a slice
                      name means nesting, so it lives at
                      /vac.slice/vac-docker.slice/vac-docker-<escaped>.slice, and the name is
                      escaped as systemd-escape does (`-` is \\x2d). systemd creates the slice
                      when the engine starts the container's scope in it; it stays, empty,
                      after the scope has gone until Vac stops it (systemctl stop)

The driver is the one the engine reports (`docker info` CgroupDriver); with a driver Vac does
not know the container gets no parent of ours and the engine's default place.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Optional

from vac import subp
from vac.backends.docker.spec import CGROUP_ROOT, cgroup_parent_for
from vac.errors import ProcessError
from vac.host.cgroups import Cgroups
from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)

SLICE_PREFIX = "vac-docker-"
SLICE_SUFFIX = ".slice"
PATH_PREFIX = f"{CGROUP_ROOT}/docker-"
UNIT_NAME_MAX = 255
# Left as they are by the escape; ':' is not (runc splits its systemd cgroupsPath on ':').
PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
STOP_TIMEOUT = 30.0


def escape(text: str) -> str:
    """A unit name component as systemd-escape writes it (every other byte as \\xNN, a leading
    dot too), so that a dash in it does not mean nesting."""
    out = []
    for i, char in enumerate(text):
        if char in PLAIN and not (i == 0 and char == "."):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def for_machine(directory: MachineDir, driver: str) -> Optional[str]:
    """The parent to give this machine's container under the engine's cgroup driver."""
    if driver == "cgroupfs":
        return cgroup_parent_for(directory)
    if driver == "systemd":
        name = f"{SLICE_PREFIX}{escape(os.path.basename(directory.path))}{SLICE_SUFFIX}"
        if len(name) <= UNIT_NAME_MAX:
            return name
        log.warning("%s: slice name longer than %d characters; no slice of its own",
                    directory.name, UNIT_NAME_MAX)
    return None


def of_container(attrs: Mapping[str, Any]) -> str:
    """The cgroup parent the engine's inspect_container record names ('' for none)."""
    return str((attrs.get("HostConfig") or {}).get("CgroupParent") or "")


def is_slice(parent: str) -> bool:
    return parent.startswith(SLICE_PREFIX) and parent.endswith(SLICE_SUFFIX) \
        and "/" not in parent and len(parent) > len(SLICE_PREFIX) + len(SLICE_SUFFIX)


def is_ours(parent: str) -> bool:
    """Is this a parent Vac gave a machine (either form), not one an operator or Vac 03 set?"""
    return parent.startswith(PATH_PREFIX) or is_slice(parent)


def slice_path(name: str) -> Optional[str]:
    """The cgroup path of a slice unit (a-b.slice -> /a.slice/a-b.slice), None if invalid."""
    if not name.endswith(SLICE_SUFFIX) or "/" in name:
        return None
    parts = name[:-len(SLICE_SUFFIX)].split("-")
    if "" in parts:
        return None
    return "".join("/" + "-".join(parts[:i + 1]) + SLICE_SUFFIX for i in range(len(parts)))


def cgroup_path(parent: str) -> Optional[str]:
    """The cgroup path (as /proc/<pid>/cgroup shows it) of one of our parents, else None."""
    if is_slice(parent):
        return slice_path(parent)
    return parent if parent.startswith(PATH_PREFIX) else None


def cpu_seconds(parent: str, cgroups: Cgroups) -> Optional[float]:
    """CPU seconds of everything that ran under one of our parents; None if it is gone or
    not ours."""
    path = cgroup_path(parent)
    return cgroups.cpu_seconds(path) if path else None


def oom_kills(parent: str, cgroups: Cgroups) -> int:
    """OOM kills under one of our parents (on v2 they are counted there the moment they
    happen, while the engine learns of them asynchronously, maybe after the container's exit);
    0 if it is gone, not ours, or (v1) the kill was counted in the container's own cgroup."""
    path = cgroup_path(parent)
    return (cgroups.oom_kills(path) or 0) if path else 0


def exists(parent: str, cgroups: Cgroups) -> bool:
    path = cgroup_path(parent)
    return bool(path) and cgroups.exists(path)


def remove(parent: Optional[str], cgroups: Cgroups) -> None:
    """Remove one of our parents (once its container has gone); anything else is left."""
    if not parent or not is_ours(parent):
        return
    if not is_slice(parent):
        cgroups.remove(parent)
        return
    path = slice_path(parent)
    if path is None or not cgroups.exists(path):
        return
    try:
        subp.run(["systemctl", "stop", parent], timeout=STOP_TIMEOUT)
    except ProcessError as e:
        log.warning("cannot stop slice %s: %s", parent, e)
