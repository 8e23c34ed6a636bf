# SPDX-License-Identifier: BSD-2-Clause
"""Delegating a machine's cgroup v2 subtree to what runs in it, for
payloads that manage their own slot.

A pilot sub-partitions its slot: it makes child cgroups, moves payloads into them and limits
them there. The kernel's delegation rules (Documentation/admin-guide/cgroup-v2.rst,
"Delegation") say how, and this module follows them:

    top      the machine's own cgroup: its limits (memory.max, cpu.weight, pids.max...) are
             files of the parent's controllers and stay root's, so nothing inside can raise
             them; its cgroup.procs, cgroup.subtree_control and cgroup.threads are handed over
    leaf     top/leaf, where the machine's processes live (no process may sit in a cgroup
             that distributes controllers to children: the "no internal processes" rule)
    enabled  cpu, memory, pids and io in top's cgroup.subtree_control, where available

Apptainer (permissions): top and leaf, with their three delegation files, are chowned to
singularity_user; moving a process needs write access to the common ancestor's cgroup.procs,
so the payload can move its processes only inside top. Docker (a cgroup namespace): the
container's private cgroup namespace is rooted at its cgroup, and with the host's cgroup2
mounted `nsdelegate` the kernel refuses writes from inside to every file of the namespace root
except the delegation files (/sys/kernel/cgroup/delegate); vacd makes the container's own
/sys/fs/cgroup mount writable (vac.host.cgroupmount) after moving its processes to /leaf.

Every file operation goes through a vac.host.cgroups.CgroupFS (unit tests use fake trees).
"""
from __future__ import annotations

import errno
import logging
import os
import time
from typing import List, Optional, Sequence, Tuple

from vac.errors import VacError
from vac.host import cgroups
from vac.host.cgroups import CgroupFS

log = logging.getLogger(__name__)

LEAF = "leaf"
CONTROLLERS = ("cpu", "memory", "pids", "io")
DELEGATED_FILES = ("cgroup.procs", "cgroup.subtree_control", "cgroup.threads")
MOVE_TIMEOUT_SECONDS = 5.0


class DelegationError(VacError):
    """A machine's cgroup could not be delegated to what runs in it."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"cannot delegate cgroup {path}: {message}")


def available(fs: CgroupFS, directory: str) -> List[str]:
    """The delegation CONTROLLERS a cgroup can give its children (its cgroup.controllers)."""
    text = cgroups.read_value(fs, directory, "cgroup.controllers", str) or ""
    present = set(text.split())
    return [c for c in CONTROLLERS if c in present]


def enabled(fs: CgroupFS, directory: str) -> List[str]:
    """The controllers a cgroup gives its children (its cgroup.subtree_control)."""
    text = cgroups.read_value(fs, directory, "cgroup.subtree_control", str) or ""
    return text.split()


def enable(fs: CgroupFS, directory: str, wanted: Sequence[str] = CONTROLLERS) -> List[str]:
    """Enable in a cgroup's subtree_control each wanted controller it has; returns those
    enabled afterwards. A controller that cannot be enabled is logged, not raised."""
    have = set(enabled(fs, directory))
    for controller in available(fs, directory):
        if controller in wanted and controller not in have:
            try:
                fs.write(os.path.join(directory, "cgroup.subtree_control"), f"+{controller}")
            except OSError as e:
                log.warning("cannot enable the %s controller in %s: %s", controller,
                            directory, e.strerror or e)
    return [c for c in enabled(fs, directory) if c in wanted]


def hand_over(fs: CgroupFS, directory: str, uid: int, gid: int) -> None:
    """Give a cgroup's directory and its delegation files to uid:gid (its other files stay
    root's: they are the limits set by its parent)."""
    fs.chown(directory, uid, gid)
    for name in DELEGATED_FILES:
        path = os.path.join(directory, name)
        if fs.exists(path):
            fs.chown(path, uid, gid)


def delegate(fs: CgroupFS, top: str, owner: Optional[Tuple[int, int]] = None) -> str:
    """Delegate an empty machine cgroup: make its leaf, enable the controllers for its
    subtree and, given an owner (uid, gid), hand top and leaf over. Returns the leaf.

    Raises:
        DelegationError: a directory cannot be made or handed over.
    """
    leaf = os.path.join(top, LEAF)
    try:
        if not fs.isdir(leaf):
            fs.mkdir(leaf)
        enable(fs, top)
        if owner is not None:
            for directory in (top, leaf):
                hand_over(fs, directory, owner[0], owner[1])
    except OSError as e:
        raise DelegationError(top, e.strerror or str(e)) from e
    return leaf


def move_all(fs: CgroupFS, top: str, leaf: str, timeout: float = MOVE_TIMEOUT_SECONDS) -> None:
    """Move every process of `top` (a running container's cgroup) into its leaf, again until
    none is left (a process may fork meanwhile); then enable the controllers in top.

    Raises:
        DelegationError: processes stay in top past the timeout, or a move fails otherwise.
    """
    deadline = time.monotonic() + timeout
    try:
        if not fs.isdir(leaf):
            fs.mkdir(leaf)
        while True:
            pids = cgroups.read_value(fs, top, "cgroup.procs", cgroups.parse_pids) or set()
            for pid in sorted(pids):
                _move(fs, leaf, pid)
            if not pids:
                enable(fs, top)
                return
            if time.monotonic() > deadline:
                raise DelegationError(top, f"{len(pids)} processes stay in it")
            fs.sleep(0.01)
    except OSError as e:
        raise DelegationError(top, e.strerror or str(e)) from e


def _move(fs: CgroupFS, leaf: str, pid: int) -> None:
    try:
        fs.write(os.path.join(leaf, "cgroup.procs"), str(pid))
    except OSError as e:
        if e.errno != errno.ESRCH:  # a process that has exited meanwhile is no matter
            raise
