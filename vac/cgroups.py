# SPDX-License-Identifier: BSD-2-Clause
"""Per-machine cgroups under a `vac` parent: create with limits, read CPU and OOM, kill, remove.

cgroup v1 (the development machines: separate cpu, cpuacct and memory hierarchies, or a
combined cpu,cpuacct mount) and v2 (EL9, one unified hierarchy) behind one class:

    limit        v1: cpu.shares = 1024 x P, memory.limit_in_bytes = mb x P MiB (hard)
                 v2: cpu.weight = 100 x P (max 10000), memory.max = mb x P MiB
    CPU seconds  v1: cpuacct.usage (ns);  v2: cpu.stat usage_usec
    OOM kills    v1: memory.oom_control oom_kill (under_oom on old kernels)
                 v2: memory.events oom_kill
    kill         v2: cgroup.kill where present; else SIGKILL every pid in cgroup.procs
                 (and in descendant cgroups), again until none is left

Parsers are pure functions of file text. Every file operation goes through a `CgroupFS`, so
unit tests drive the same code over a fake tree under tmp_path. Control files are written in
place (open + write): cgroupfs has no rename, so vac.fsutil.atomic_write does not apply here.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Set, Tuple

from vac import procs
from vac.errors import VacError
from vac.hostinfo import cgroup_version

log = logging.getLogger(__name__)

PARENT = "vac"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")
V2_CONTROLLERS = ("cpu", "memory")
CPU_SHARES_PER_PROCESSOR = 1024
CPU_WEIGHT_PER_PROCESSOR = 100
CPU_WEIGHT_MAX = 10000
KILL_TIMEOUT_SECONDS = 5.0


class CgroupError(VacError):
    """A cgroup could not be created, limited, read or removed."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(f"cgroup {path}: {message}")


# Pure parsers -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Hierarchy:
    """Where the controllers Vac uses are mounted.

    version 1: mounts maps each of cpu, cpuacct, memory to its mount directory (a combined
    cpu,cpuacct mount gives both the same directory); a controller that is not mounted is
    absent. version 2: mounts is {"": <the unified mount>}.
    """

    version: int
    mounts: Mapping[str, str]

    def root(self, controller: str) -> Optional[str]:
        return self.mounts.get("" if self.version == 2 else controller)


def parse_mounts(mounts_text: str) -> Hierarchy:
    """The Hierarchy described by /proc/self/mounts text.

    v2 when /sys/fs/cgroup itself is cgroup2 (vac.hostinfo.cgroup_version); a cgroup2 mount
    elsewhere (the empty /sys/fs/cgroup/unified of a hybrid host) is ignored on v1.
    """
    if cgroup_version(mounts_text) == 2:
        return Hierarchy(2, {"": "/sys/fs/cgroup"})
    mounts: Dict[str, str] = {}
    for line in mounts_text.splitlines():
        parts = line.split()
        if len(parts) < 4 or parts[2] != "cgroup":
            continue
        options = parts[3].split(",")
        for controller in V1_CONTROLLERS:
            if controller in options and controller not in mounts:
                mounts[controller] = _unescape_mount(parts[1])
    return Hierarchy(1, mounts)


def _unescape_mount(field: str) -> str:
    """Mount points in /proc/mounts escape space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_flat_keyed(text: str) -> Dict[str, int]:
    """'key value' lines (cpu.stat, memory.events, memory.oom_control) as {key: int}."""
    found: Dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            found[parts[0]] = int(parts[1])
    return found


def parse_pids(text: str) -> Set[int]:
    """cgroup.procs text as a set of pids."""
    return {int(word) for word in text.split() if word.isdigit()}


def cpu_shares(processors: int) -> int:
    """v1 cpu.shares: 1024 per processor, as the original Vac set."""
    return CPU_SHARES_PER_PROCESSOR * max(1, processors)


def cpu_weight(processors: int) -> int:
    """v2 cpu.weight: 100 (the default of every other cgroup) per processor, at most 10000."""
    return min(CPU_WEIGHT_MAX, CPU_WEIGHT_PER_PROCESSOR * max(1, processors))


def cpu_seconds_v1(cpuacct_usage_text: str) -> float:
    words = cpuacct_usage_text.split()
    return int(words[0]) / 1e9 if words and words[0].isdigit() else 0.0


def cpu_seconds_v2(cpu_stat_text: str) -> float:
    return parse_flat_keyed(cpu_stat_text).get("usage_usec", 0) / 1e6


def oom_kills_v1(oom_control_text: str) -> int:
    """OOM kills from memory.oom_control; kernels before 4.13 only say under_oom."""
    values = parse_flat_keyed(oom_control_text)
    if "oom_kill" in values:
        return values["oom_kill"]
    return 1 if values.get("under_oom", 0) else 0


def oom_kills_v2(memory_events_text: str) -> int:
    return parse_flat_keyed(memory_events_text).get("oom_kill", 0)


def in_cgroup(process_path: str, cgroup_path: str) -> bool:
    """Is a /proc/<pid>/cgroup path the cgroup `cgroup_path` (both "/vac/x") or below it?"""
    return process_path == cgroup_path or process_path.startswith(cgroup_path.rstrip("/") + "/")


# File operations --------------------------------------------------------------------------

class CgroupFS:
    """The kernel's cgroup filesystem. Tests subclass this over a fake tree."""

    def mkdir(self, path: str) -> None:
        os.mkdir(path, 0o755)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def listdir(self, path: str) -> List[str]:
        return sorted(entry.name for entry in os.scandir(path) if entry.is_dir())

    def read(self, path: str) -> str:
        with open(path) as f:
            return f.read()

    def write(self, path: str, value: str) -> None:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def kill(self, pid: int) -> None:
        procs.sigkill(pid)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def read_hierarchy(mounts_path: str = "/proc/self/mounts") -> Hierarchy:
    with open(mounts_path) as f:
        return parse_mounts(f.read())


class MachineCgroup:
    """The cgroup(s) of one machine: <root>/vac/<name> in each hierarchy Vac uses."""

    def __init__(self, hierarchy: Hierarchy, name: str, parent: str = PARENT,
                 fs: Optional[CgroupFS] = None):
        if not name or "/" in name or name in (".", ".."):
            raise CgroupError(name, "not a valid cgroup name")
        self.hierarchy = hierarchy
        self.name = name
        self.parent = parent
        self.fs = fs or CgroupFS()

    @property
    def relative_path(self) -> str:
        """The path as /proc/<pid>/cgroup shows it: /vac/<name>."""
        return f"/{self.parent}/{self.name}"

    def dir(self, controller: str) -> Optional[str]:
        root = self.hierarchy.root(controller)
        return os.path.join(root, self.parent, self.name) if root else None

    @property
    def dirs(self) -> List[str]:
        """The distinct directories of this cgroup (one on v2, up to three on v1)."""
        found: List[str] = []
        for root in self.hierarchy.mounts.values():
            path = os.path.join(root, self.parent, self.name)
            if path not in found:
                found.append(path)
        return found

    @property
    def procs_files(self) -> List[str]:
        """The cgroup.procs files a new process writes its own pid into to join."""
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
            self.fs.write(os.path.join(cpu, "cpu.shares"), str(cpu_shares(processors)))
        else:
            log.warning("%s: no cpu controller mounted; no CPU weight", self.name)
        memory = self.dir("memory")
        assert memory is not None
        self.fs.write(os.path.join(memory, "memory.limit_in_bytes"), str(memory_bytes))

    def _create_v2(self, processors: int, memory_bytes: int) -> None:
        root = self.hierarchy.root("")
        assert root is not None
        parent = os.path.join(root, self.parent)
        if not self.fs.isdir(parent):
            self.fs.mkdir(parent)
        for directory in (root, parent):
            self._enable_controllers(directory)
        d = self.dir("")
        assert d is not None
        if not self.fs.isdir(d):
            self.fs.mkdir(d)
        weight = os.path.join(d, "cpu.weight")
        if self.fs.exists(weight):
            self.fs.write(weight, str(cpu_weight(processors)))
        else:
            log.warning("%s: cpu controller not enabled; no CPU weight", self.name)
        limit = os.path.join(d, "memory.max")
        if not self.fs.exists(limit):
            raise CgroupError(self.relative_path, "memory controller not enabled "
                              f"(no memory.max; check {parent}/cgroup.subtree_control)")
        self.fs.write(limit, str(memory_bytes))

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
                found |= parse_pids(self._read_or_empty(os.path.join(sub, "cgroup.procs")))
        return found

    def cpu_seconds(self) -> float:
        """CPU time used by every process that ever ran in the cgroup; 0.0 if it is gone."""
        if self.hierarchy.version == 2:
            d = self.dir("")
            return cpu_seconds_v2(self._read_or_empty(os.path.join(d, "cpu.stat"))) if d else 0.0
        d = self.dir("cpuacct")
        return cpu_seconds_v1(self._read_or_empty(os.path.join(d, "cpuacct.usage"))) \
            if d else 0.0

    def oom_kills(self) -> int:
        """How many processes the OOM killer killed in this cgroup (0 if it is gone)."""
        d = self.dir("memory")
        if d is None:
            return 0
        if self.hierarchy.version == 2:
            return oom_kills_v2(self._read_or_empty(os.path.join(d, "memory.events")))
        return oom_kills_v1(self._read_or_empty(os.path.join(d, "memory.oom_control")))

    def memory_limit(self) -> Optional[int]:
        d = self.dir("memory")
        if d is None:
            return None
        name = "memory.max" if self.hierarchy.version == 2 else "memory.limit_in_bytes"
        text = self._read_or_empty(os.path.join(d, name)).strip()
        return int(text) if text.isdigit() else None

    # Ending -------------------------------------------------------------------------------

    def kill(self, timeout: float = KILL_TIMEOUT_SECONDS) -> bool:
        """SIGKILL every process in the cgroup until none is left; True if it is empty.

        Repeats because a process may fork between reading cgroup.procs and the kill.
        """
        if not self.exists():
            return True
        deadline = time.monotonic() + timeout
        unified = self.dir("")
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

    def _read_or_empty(self, path: str) -> str:
        try:
            return self.fs.read(path)
        except OSError:
            return ""

    def _write_quietly(self, path: str, value: str) -> None:
        try:
            self.fs.write(path, value)
        except OSError as e:
            log.warning("%s: cannot write %s: %s", self.name, path, e.strerror or e)


def list_children(hierarchy: Hierarchy, prefixes: Tuple[str, ...], parent: str = PARENT,
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


def writable(hierarchy: Hierarchy, parent: str = PARENT) -> Tuple[bool, str]:
    """Can this process make Vac cgroups? (ok, reason) for a probe; never raises."""
    needed = ("",) if hierarchy.version == 2 else V1_CONTROLLERS
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
        root = hierarchy.root("") or ""
        try:
            with open(os.path.join(root, "cgroup.controllers")) as f:
                available = set(f.read().split())
        except OSError as e:
            return False, f"cannot read {root}/cgroup.controllers: {e.strerror or e}"
        if "memory" not in available:
            return False, f"the memory controller is not available in {root}"
    return True, ""


def membership_key(hierarchy: Hierarchy) -> str:
    """The /proc/<pid>/cgroup key that says which machine cgroup a process is in."""
    return "" if hierarchy.version == 2 else "memory"
