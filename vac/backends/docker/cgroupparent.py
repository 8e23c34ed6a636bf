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
from typing import Any, List, Mapping, Optional, Set

from vac import subp
from vac.backends.docker.spec import CGROUP_ROOT, cgroup_parent_for
from vac.errors import ProcessError
from vac.host.cgroups import Cgroups
from vac.machine.directory import MachineDir
from vac.machine.slots import ordinal_of

log = logging.getLogger(__name__)

SLICE_PREFIX = "vac-docker-"
SLICE_SUFFIX = ".slice"
PATH_PREFIX = f"{CGROUP_ROOT}/docker-"
UNIT_NAME_MAX = 255
# Left as they are by the escape; ':' is not (runc splits its systemd cgroupsPath on ':').
PLAIN = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
STOP_TIMEOUT = 30.0
SLICE_DIRECTORY = "/vac.slice/vac-docker.slice"   # where our slices live (slice_path)


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


def unescape(text: str) -> Optional[str]:
    """escape() undone (None if the text is not an escape's output)."""
    out, i = bytearray(), 0
    while i < len(text):
        if text.startswith("\\x", i) and len(text) >= i + 4:
            try:
                out.append(int(text[i + 2:i + 4], 16))
            except ValueError:
                return None
            i += 4
        elif text[i] in PLAIN:
            out += text[i].encode()
            i += 1
        else:
            return None
    try:
        return out.decode()
    except UnicodeDecodeError:
        return None


def candidates(dir_name: str) -> List[str]:
    """Every parent Vac may have given the machine of this directory name, in either driver's
    form: the engine made it before backend.json recorded which (a vacd killed between the two
    leaves no record), so the name alone must find it."""
    found = [f"{PATH_PREFIX}{dir_name}"]
    name = f"{SLICE_PREFIX}{escape(dir_name)}{SLICE_SUFFIX}"
    if len(name) <= UNIT_NAME_MAX:
        found.append(name)
    return found


def present(cgroups: Cgroups) -> Set[str]:
    """The machine directory names that have a parent of ours on the host, in any hierarchy
    (the cgroupfs form under /vac, the slices under vac-docker.slice)."""
    found: Set[str] = set()
    for child in cgroups.children(CGROUP_ROOT):
        if child.startswith("docker-") and len(child) > len("docker-"):
            found.add(child[len("docker-"):])
    for child in cgroups.children(SLICE_DIRECTORY):
        if is_slice(child):
            dir_name = unescape(child[len(SLICE_PREFIX):-len(SLICE_SUFFIX)])
            if dir_name:
                found.add(dir_name)
    return found


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


def release(directory: MachineDir, cgroups: Cgroups) -> bool:
    """Remove the parent a finished machine still has (a vacd killed during its destroy, or
    before backend.json recorded the parent, left it): the one its record names or one its
    directory name gives. True if one was there."""
    recorded = str(directory.read_backend_record().get("cgroup_parent") or "")
    found = [p for p in dict.fromkeys([recorded] + candidates(os.path.basename(directory.path)))
             if p and is_ours(p) and exists(p, cgroups)]
    for parent in found:
        log.warning("%s: removing cgroup parent %s left by an interrupted destroy or creation",
                    directory.name, parent)
        remove(parent, cgroups)
    return bool(found)


def release_leftovers(machines_dir: str, factory_name: str, cgroups: Cgroups) -> List[str]:
    """Remove every parent of ours on the host whose machine is this factory's and finished,
    or whose directory has gone (expired, removed by hand), with or without its backend.json.
    Returns the directory names whose parents were there. A machine whose directory is not
    finished lives, or is being made: its parent is left alone."""
    released = []
    for dir_name in sorted(present(cgroups)):
        parts = dir_name.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or ordinal_of(factory_name, parts[2]) < 0:
            continue
        path = os.path.join(machines_dir, dir_name)
        if os.path.isdir(path) and not os.path.lexists(os.path.join(path, "finished")):
            continue
        if release(MachineDir(path), cgroups):
            released.append(dir_name)
    return released
