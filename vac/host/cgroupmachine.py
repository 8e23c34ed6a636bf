# SPDX-License-Identifier: BSD-2-Clause
"""The cgroup Vac makes for one machine under `vac`: create with limits, read, kill, remove.

For backends whose machines are plain processes (Apptainer): Vac creates the cgroup, puts the
machine's first process in it and ends it by killing everything inside. The cgroup v1/v2
knowledge (where the hierarchies are, file formats, weights) is vac.host.cgroups'; this module is
the lifecycle on top of it:

    limit   v1: cpu.shares, memory.limit_in_bytes = mb x P MiB (hard)
            v2: cpu.weight, memory.max = mb x P MiB (controllers enabled on the way down)
    kill    v2: cgroup.kill where present; else SIGKILL every pid in cgroup.procs
            (and in descendant cgroups), again until none is left
    remove  rmdir descendants first, in every hierarchy the machine cgroup is in

Every file operation goes through a vac.host.cgroups.CgroupFS, so unit tests drive the same code
over a fake tree under tmp_path.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from typing import Callable, List, Optional, Set, Tuple, TypeVar

from vac.errors import VacError
from vac.host import cgroups, delegation, procs
from vac.host.cgroups import CgroupFS, Hierarchy

log = logging.getLogger(__name__)

V2_CONTROLLERS = ("cpu", "memory")
KILL_TIMEOUT_SECONDS = 5.0

T = TypeVar("T")


class CgroupError(VacError):
    """A cgroup could not be created, limited, read or removed."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"cgroup {path}: {message}")


class MachineCgroup:
    """The cgroup(s) of one machine: <root>/vac/<name> in each hierarchy Vac uses."""

    def __init__(self, hierarchy: Hierarchy, name: str, parent: str = cgroups.PARENT,
                 fs: Optional[CgroupFS] = None):
        if not name or "/" in name or name in (".", ".."):
            raise CgroupError(name, "not a valid cgroup name")
        if cgroups.host_path(cgroups.Mount("/", "/"), f"/{parent}/{name}") is None:
            raise CgroupError(f"{parent}/{name}", "not a valid cgroup parent")
        self.hierarchy = hierarchy
        self.name = name
        self.parent = parent
        self.fs = fs or CgroupFS()
        self.leaf: Optional[str] = None   # where new processes join once delegated

    @property
    def relative_path(self) -> str:
        """The path as /proc/<pid>/cgroup shows it: /vac/<name>."""
        return f"/{self.parent}/{self.name}"

    def _at(self, root: str) -> str:
        path = cgroups.host_path(cgroups.Mount("/", root), self.relative_path)
        assert path is not None  # the parent and name were checked in __init__
        return path

    def dir(self, controller: str) -> Optional[str]:
        root = self.hierarchy.root(controller)
        return self._at(root) if root else None

    @property
    def dirs(self) -> List[str]:
        """The distinct directories of this cgroup (one on v2, up to three on v1)."""
        found: List[str] = []
        for root in self.hierarchy.mounts.values():
            path = self._at(root)
            if path not in found:
                found.append(path)
        return found

    @property
    def procs_files(self) -> List[str]:
        """The cgroup.procs files a new process writes its own pid into to join (the leaf's,
        once delegated)."""
        if self.leaf is not None:
            return [os.path.join(self.leaf, "cgroup.procs")]
        return [os.path.join(d, "cgroup.procs") for d in self.dirs]

    def exists(self) -> bool:
        return any(self.fs.isdir(d) for d in self.dirs)

    # Creation -----------------------------------------------------------------------------

    def create(self, processors: int, memory_bytes: int) -> None:
        """Make the cgroup (and the vac parent) and set its CPU weight and memory limit.

        Raises:
            CgroupError: the memory controller is missing or a directory/limit cannot be set.
        """
        if self.hierarchy.root("memory") is None:
            raise CgroupError(self.relative_path, "no memory controller is mounted")
        try:
            if self.hierarchy.version == 2:
                self._create_v2(processors, memory_bytes)
            else:
                self._create_v1(processors, memory_bytes)
        except OSError as e:
            raise CgroupError(self.relative_path, e.strerror or str(e)) from e

    def _create_v1(self, processors: int, memory_bytes: int) -> None:
        for d in self.dirs:
            self._mkdirs(d)
        cpu = self.dir("cpu")
        if cpu is not None:
            self.fs.write(os.path.join(cpu, "cpu.shares"), str(cgroups.cpu_shares(processors)))
        else:
            log.warning("%s: no cpu controller mounted; no CPU weight", self.name)
        memory = self.dir("memory")
        assert memory is not None
        self.fs.write(os.path.join(memory, "memory.limit_in_bytes"), str(memory_bytes))

    def _create_v2(self, processors: int, memory_bytes: int) -> None:
        root = self.hierarchy.root(cgroups.V2)
        assert root is not None
        parent = os.path.dirname(self._at(root))
        if not self.fs.isdir(parent):
            self.fs.mkdir(parent)
        for directory in (root, parent):
            self._enable_controllers(directory)
        d = self._at(root)
        if not self.fs.isdir(d):
            self.fs.mkdir(d)
        weight = os.path.join(d, "cpu.weight")
        if self.fs.exists(weight):
            self.fs.write(weight, str(cgroups.cpu_weight(processors)))
        else:
            log.warning("%s: cpu controller not enabled; no CPU weight", self.name)
        limit = os.path.join(d, "memory.max")
        if not self.fs.exists(limit):
            raise CgroupError(self.relative_path, "memory controller not enabled "
                              f"(no memory.max; check {parent}/cgroup.subtree_control)")
        self.fs.write(limit, str(memory_bytes))

    def delegate(self, uid: int, gid: int) -> str:
        """On v2, delegate the new (empty) cgroup to uid:gid (vac.host.delegation): the
        controllers enabled on the way down, the leaf made, both handed over. Returns the
        leaf's cgroup path (as /proc/<pid>/cgroup shows it).

        Raises:
            CgroupError: not v2, or the delegation failed.
        """
        root = self.hierarchy.root(cgroups.V2)
        if self.hierarchy.version != 2 or root is None:
            raise CgroupError(self.relative_path, "delegation needs cgroup v2")
        top = self._at(root)
        for directory in (root, os.path.dirname(top)):
            delegation.enable(self.fs, directory)
        try:
            self.leaf = delegation.delegate(self.fs, top, (uid, gid))
        except delegation.DelegationError as e:
            raise CgroupError(self.relative_path, str(e)) from e
        return f"{self.relative_path}/{delegation.LEAF}"

    def _enable_controllers(self, directory: str) -> None:
        control = os.path.join(directory, "cgroup.subtree_control")
        enabled = set(self.fs.read(control).split()) if self.fs.exists(control) else set()
        for controller in V2_CONTROLLERS:
            if controller in enabled:
                continue
            try:
                self.fs.write(control, f"+{controller}")
            except OSError as e:
                log.warning("cannot enable the %s controller in %s: %s", controller,
                            directory, e.strerror or e)

    def _mkdirs(self, path: str) -> None:
        parent = os.path.dirname(path)
        if not self.fs.isdir(parent):
            self.fs.mkdir(parent)
        if not self.fs.isdir(path):
            self.fs.mkdir(path)

    # Observation --------------------------------------------------------------------------

    def pids(self) -> Set[int]:
        """Every process in this cgroup and its descendant cgroups, in any hierarchy."""
        found: Set[int] = set()
        for d in self.dirs:
            for sub in self._tree(d):
                inside = cgroups.read_value(self.fs, sub, "cgroup.procs", cgroups.parse_pids)
                found |= inside or set()
        return found

    def cpu_seconds(self) -> float:
        """CPU time used by every process that ever ran in the cgroup; 0.0 if it is gone."""
        if self.hierarchy.version == 2:
            return self._read(cgroups.V2, "cpu.stat", cgroups.cpu_seconds_v2) or 0.0
        return self._read("cpuacct", "cpuacct.usage", cgroups.cpu_seconds_v1) or 0.0

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 if it is gone)."""
        if self.hierarchy.version == 2:
            return self._read("memory", "memory.events", cgroups.oom_kills_v2) or 0
        return self._read("memory", "memory.oom_control", cgroups.oom_kills_v1) or 0

    def memory_limit(self) -> Optional[int]:
        name = "memory.max" if self.hierarchy.version == 2 else "memory.limit_in_bytes"
        text = self._read("memory", name, str.strip) or ""
        return int(text) if text.isdigit() else None

    def _read(self, controller: str, filename: str, parse: Callable[[str], T]) -> Optional[T]:
        """A control file of this cgroup in a controller's hierarchy, parsed; None if absent."""
        return cgroups.read_value(self.fs, self.dir(controller), filename, parse)

    # Ending -------------------------------------------------------------------------------

    def kill(self, timeout: float = KILL_TIMEOUT_SECONDS) -> bool:
        """SIGKILL every process in the cgroup until none is left; True if it is empty.

        Repeats because a process may fork between reading cgroup.procs and the kill.
        """
        if not self.exists():
            return True
        deadline = time.monotonic() + timeout
        unified = self.dir(cgroups.V2)
        cgroup_kill = os.path.join(unified, "cgroup.kill") if unified else None
        while True:
            pids = self.pids()
            if not pids:
                return True
            if cgroup_kill and self.fs.exists(cgroup_kill):
                self._write_quietly(cgroup_kill, "1")
            else:
                procs.kill_all(sorted(pids), self.fs.kill)
            if time.monotonic() > deadline:
                log.warning("%s: %d processes survive SIGKILL", self.name, len(self.pids()))
                return not self.pids()
            self.fs.sleep(0.02)

    def remove(self, timeout: float = 2.0) -> bool:
        """rmdir the cgroup (descendants first) in every hierarchy; True if none is left.

        An absent cgroup counts as removed. A cgroup whose last processes are still exiting
        is busy for a moment, so removal is retried until `timeout`.
        """
        deadline = time.monotonic() + timeout
        while True:
            busy = False
            for d in self.dirs:
                for sub in reversed(self._tree(d)):
                    try:
                        self.fs.rmdir(sub)
                    except FileNotFoundError:
                        pass
                    except OSError as e:
                        if e.errno not in (errno.EBUSY, errno.ENOTEMPTY):
                            raise CgroupError(sub, e.strerror or str(e)) from e
                        busy = True
            if not busy:
                return True
            if time.monotonic() > deadline:
                return False
            self.fs.sleep(0.05)

    # Helpers ------------------------------------------------------------------------------

    def _tree(self, top: str) -> List[str]:
        """top and every cgroup below it, parents before children; [] if top is absent."""
        if not self.fs.isdir(top):
            return []
        found = [top]
        try:
            children = self.fs.listdir(top)
        except OSError:
            return found
        for child in children:
            found.extend(self._tree(os.path.join(top, child)))
        return found

    def _write_quietly(self, path: str, value: str) -> None:
        try:
            self.fs.write(path, value)
        except OSError as e:
            log.warning("%s: cannot write %s: %s", self.name, path, e.strerror or e)


def list_children(hierarchy: Hierarchy, prefixes: Tuple[str, ...], parent: str = cgroups.PARENT,
                  fs: Optional[CgroupFS] = None) -> List[str]:
    """Names of the cgroups directly under <root>/vac whose names start with a prefix,
    in any hierarchy Vac uses (sorted, each once)."""
    fs = fs or CgroupFS()
    names: Set[str] = set()
    for root in set(hierarchy.mounts.values()):
        top = os.path.join(root, parent)
        if not fs.isdir(top):
            continue
        try:
            children = fs.listdir(top)
        except OSError:
            continue
        names.update(c for c in children if c.startswith(prefixes))
    return sorted(names)


def writable(hierarchy: Hierarchy, parent: str = cgroups.PARENT) -> Tuple[bool, str]:
    """Can this process make Vac cgroups? (ok, reason) for a probe; never raises."""
    needed = (cgroups.V2,) if hierarchy.version == 2 else cgroups.V1_CONTROLLERS
    for controller in needed:
        root = hierarchy.root(controller)
        if root is None:
            if controller == "memory" or hierarchy.version == 2:
                return False, f"no {controller or 'cgroup2'} hierarchy is mounted"
            continue
        top = os.path.join(root, parent)
        target = top if os.path.isdir(top) else root
        if not os.access(target, os.W_OK):
            return False, f"{target} is not writable (vacd must run as root)"
    if hierarchy.version == 2:
        root = hierarchy.root(cgroups.V2) or ""
        try:
            with open(os.path.join(root, "cgroup.controllers")) as f:
                available = set(f.read().split())
        except OSError as e:
            return False, f"cannot read {root}/cgroup.controllers: {e.strerror or e}"
        if "memory" not in available:
            return False, f"the memory controller is not available in {root}"
    return True, ""
