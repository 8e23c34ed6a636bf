# SPDX-License-Identifier: BSD-2-Clause
"""Cgroup v1/v2 knowledge: where the hierarchies are, what a cgroup's files say, rmdir by path.

The one place that knows cgroup v1 (separate cpu, cpuacct, memory... hierarchies, or combined
cpu,cpuacct) and v2 (one unified hierarchy): for the per-machine cgroups Vac makes itself
(vac.host.cgroupmachine, the Apptainer backend) and for cgroups an engine makes (Docker:
/docker/<id> with the cgroupfs driver, /system.slice/docker-<id>.scope with systemd, or under
a cgroup parent we name).

    mounts       /proc/self/mountinfo, whose root field matters inside a cgroup namespace:
                 Hierarchies (every hierarchy, with roots) and Hierarchy (the controllers
                 Vac's machine cgroups use)
    membership   /proc/<pid>/cgroup through vac.host.procs
    CPU seconds  v1: cpuacct.usage (ns);  v2: cpu.stat usage_usec
    OOM kills    v1: memory.oom_control oom_kill (under_oom on old kernels)
                 v2: memory.events oom_kill
    weights      v1: cpu.shares = 1024 x P;  v2: cpu.weight = 100 x P (max 10000)

A parent cgroup keeps the CPU time of children that have gone (v1 cpuacct charges every
ancestor; v2 flushes a removed child's usage into its parent), so reading a per-machine parent
gives the final CPU seconds after the container's own cgroup has been removed.

Parsers are pure functions of file text. Every file operation goes through a `CgroupFS`, and
readers take a proc root, so unit tests drive the same code over fake trees under tmp_path.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Set, TypeVar

from vac import fsutil
from vac.host import procs

log = logging.getLogger(__name__)

PARENT = "vac"               # every machine cgroup of Vac's is /vac/<something>
V2 = ""                      # key of the unified hierarchy (also in /proc/<pid>/cgroup maps)
CPU_V1 = "cpuacct"           # the v1 controller that counts CPU time
UNIFIED_POINT = "/sys/fs/cgroup"
V1_CONTROLLERS = ("cpu", "cpuacct", "memory")   # the v1 controllers machine cgroups use
# v1 controllers as they appear among a cgroup mount's options (the rest are mount options).
KNOWN_V1_CONTROLLERS = frozenset(("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer",
                                  "net_cls", "net_prio", "blkio", "perf_event", "hugetlb",
                                  "pids", "rdma", "misc", "debug"))
MOUNTINFO_LIMIT = 1024 * 1024
CPU_SHARES_PER_PROCESSOR = 1024
CPU_WEIGHT_PER_PROCESSOR = 100
CPU_WEIGHT_MAX = 10000

T = TypeVar("T")


# Where the hierarchies are ----------------------------------------------------------------

@dataclass(frozen=True)
class Mount:
    """One mounted hierarchy: the cgroup path at its root, and where it is mounted."""

    root: str
    point: str


@dataclass(frozen=True)
class Hierarchy:
    """Where the controllers Vac's machine cgroups use are mounted.

    version 1: mounts maps each of cpu, cpuacct, memory to its mount directory (a combined
    cpu,cpuacct mount gives both the same directory); a controller that is not mounted is
    absent. version 2: mounts is {"": <the unified mount>}.
    """

    version: int
    mounts: Mapping[str, str]

    def root(self, controller: str) -> Optional[str]:
        return self.mounts.get(V2 if self.version == 2 else controller)


@dataclass(frozen=True)
class Hierarchies:
    """Every mounted hierarchy: v1 ones by controller (and name=...), and the unified one."""

    v1: Mapping[str, Mount] = field(default_factory=dict)
    v2: Optional[Mount] = None

    @property
    def version(self) -> int:
        """1 if any v1 controller hierarchy is mounted (legacy or hybrid), else 2."""
        return 1 if any(c in KNOWN_V1_CONTROLLERS for c in self.v1) else 2

    def mounts(self) -> List[Mount]:
        """Every distinct hierarchy (co-mounted v1 controllers count once), v2 last."""
        found: List[Mount] = []
        for mount in list(self.v1.values()) + ([self.v2] if self.v2 else []):
            if mount not in found:
                found.append(mount)
        return found

    def for_machines(self) -> Hierarchy:
        """The Hierarchy of Vac's machine cgroups: v2 when /sys/fs/cgroup itself is cgroup2
        (a cgroup2 mount elsewhere, the empty /sys/fs/cgroup/unified of a hybrid host, is
        ignored), else the v1 mounts of cpu, cpuacct and memory."""
        if self.v2 is not None and self.v2.point == UNIFIED_POINT:
            return Hierarchy(2, {V2: UNIFIED_POINT})
        return Hierarchy(1, {c: self.v1[c].point for c in V1_CONTROLLERS if c in self.v1})


def parse_mountinfo(text: str) -> Hierarchies:
    """The cgroup hierarchies in /proc/<pid>/mountinfo text (man 5 proc)."""
    v1: Dict[str, Mount] = {}
    v2: Optional[Mount] = None
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        mount = Mount(root=unescape_mount_field(fields[3]), point=unescape_mount_field(fields[4]))
        if tail[0] == "cgroup2":
            v2 = v2 or mount
        elif tail[0] == "cgroup" and len(tail) >= 3:
            for option in tail[2].split(","):
                if option in KNOWN_V1_CONTROLLERS or option.startswith("name="):
                    v1.setdefault(option, mount)
    return Hierarchies(v1=v1, v2=v2)


def unescape_mount_field(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def read_hierarchies(proc_root: str = "/proc") -> Hierarchies:
    """The hierarchies this process sees (none if mountinfo cannot be read)."""
    text = fsutil.read_optional(os.path.join(proc_root, "self", "mountinfo"), MOUNTINFO_LIMIT)
    return parse_mountinfo(text or "")


def read_hierarchy(proc_root: str = "/proc") -> Hierarchy:
    """The Hierarchy of Vac's machine cgroups on this host."""
    return read_hierarchies(proc_root).for_machines()


# Paths ------------------------------------------------------------------------------------

def clean_path(cgroup_path: str) -> Optional[str]:
    """A cgroup path as /a/b, or None if it is not absolute or climbs with '..'."""
    if not cgroup_path.startswith("/"):
        return None
    parts = [p for p in cgroup_path.split("/") if p and p != "."]
    return None if ".." in parts else "/" + "/".join(parts)


def host_path(mount: Mount, cgroup_path: str) -> Optional[str]:
    """The directory of cgroup_path in a mounted hierarchy, or None if it lies outside it."""
    path, root = clean_path(cgroup_path), clean_path(mount.root)
    if path is None or root is None:
        return None
    if root != "/":
        if path != root and not path.startswith(root + "/"):
            return None
        path = path[len(root):] or "/"
    return os.path.join(mount.point, path.lstrip("/")).rstrip("/") or "/"


def in_cgroup(process_path: str, cgroup_path: str) -> bool:
    """Is a /proc/<pid>/cgroup path the cgroup `cgroup_path` (both "/vac/x") or below it?"""
    return process_path == cgroup_path or process_path.startswith(cgroup_path.rstrip("/") + "/")


def membership_key(hierarchy: Hierarchy) -> str:
    """The /proc/<pid>/cgroup key that says which machine cgroup a process is in."""
    return V2 if hierarchy.version == 2 else "memory"


# Pure parsers -----------------------------------------------------------------------------

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


def parse_cpuacct_usage(text: str) -> float:
    """cgroup v1 cpuacct.usage (nanoseconds) as seconds.

    Raises:
        ValueError: not a number of nanoseconds.
    """
    value = text.strip()
    if not value.isdigit():
        raise ValueError(f"cpuacct.usage is not a count: {value[:40]!r}")
    return int(value) / 1e9


def parse_cpu_stat(text: str) -> float:
    """cgroup v2 cpu.stat's usage_usec as seconds.

    Raises:
        ValueError: no usage_usec line with a number.
    """
    values = parse_flat_keyed(text)
    if "usage_usec" not in values:
        raise ValueError("no usage_usec in cpu.stat")
    return values["usage_usec"] / 1e6


def cpu_seconds_v1(cpuacct_usage_text: str) -> float:
    """cpuacct.usage as seconds; 0.0 if the text is not a count."""
    return _or_zero(parse_cpuacct_usage, cpuacct_usage_text)


def cpu_seconds_v2(cpu_stat_text: str) -> float:
    """cpu.stat's usage_usec as seconds; 0.0 if there is none."""
    return _or_zero(parse_cpu_stat, cpu_stat_text)


def _or_zero(parse: Callable[[str], float], text: str) -> float:
    try:
        return parse(text)
    except ValueError:
        return 0.0


def oom_kills_v1(oom_control_text: str) -> int:
    """OOM kills from memory.oom_control; kernels before 4.13 only say under_oom."""
    values = parse_flat_keyed(oom_control_text)
    if "oom_kill" in values:
        return values["oom_kill"]
    return 1 if values.get("under_oom", 0) else 0


def oom_kills_v2(memory_events_text: str) -> int:
    return parse_flat_keyed(memory_events_text).get("oom_kill", 0)


def cpu_shares(processors: int) -> int:
    """v1 cpu.shares: 1024 per processor, as the original Vac set."""
    return CPU_SHARES_PER_PROCESSOR * max(1, processors)


def cpu_weight(processors: int) -> int:
    """v2 cpu.weight: 100 (the default of every other cgroup) per processor, at most 10000."""
    return min(CPU_WEIGHT_MAX, CPU_WEIGHT_PER_PROCESSOR * max(1, processors))


# File operations --------------------------------------------------------------------------

class CgroupFS:
    """The kernel's cgroup filesystem. Tests subclass this over a fake tree.

    Control files are written in place (open + write): cgroupfs has no rename, so
    vac.fsutil.atomic_write does not apply here.
    """

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

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)

    def kill(self, pid: int) -> None:
        procs.sigkill(pid)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def read_value(fs: CgroupFS, directory: Optional[str], filename: str,
               parse: Callable[[str], T]) -> Optional[T]:
    """A control file of a cgroup directory, parsed; None if absent, unreadable or garbled."""
    if directory is None:
        return None
    try:
        text = fs.read(os.path.join(directory, filename))
    except OSError:
        return None
    try:
        return parse(text)
    except ValueError:
        log.warning("unreadable %s in %s", filename, directory)
        return None


# Any cgroup, by path ----------------------------------------------------------------------

class Cgroups:
    """The host's cgroup hierarchies, read once, and what can be read or removed in them by
    cgroup path (cgroups an engine made, which may be in every hierarchy)."""

    def __init__(self, proc_root: str = "/proc", hierarchies: Optional[Hierarchies] = None,
                 fs: Optional[CgroupFS] = None):
        self.proc_root = proc_root
        self._hierarchies = hierarchies
        self.fs = fs or CgroupFS()

    @property
    def hierarchies(self) -> Hierarchies:
        if self._hierarchies is None:
            self._hierarchies = read_hierarchies(self.proc_root)
        return self._hierarchies

    def of_pid(self, pid: int) -> Dict[str, str]:
        """{controller: cgroup path} of a process; empty if it has gone or is unreadable."""
        return procs.cgroups_of(pid, self.proc_root) if pid > 0 else {}

    def cpu_seconds_at(self, paths: Mapping[str, str]) -> Optional[float]:
        """CPU seconds of the cgroup named per hierarchy in `paths` (as of_pid gives):
        v1 cpuacct if that hierarchy is mounted and readable, else v2; None if neither."""
        h = self.hierarchies
        if CPU_V1 in paths and CPU_V1 in h.v1:
            value = read_value(self.fs, host_path(h.v1[CPU_V1], paths[CPU_V1]),
                               "cpuacct.usage", parse_cpuacct_usage)
            if value is not None:
                return value
        if V2 in paths and h.v2 is not None:
            return read_value(self.fs, host_path(h.v2, paths[V2]), "cpu.stat", parse_cpu_stat)
        return None

    def cpu_seconds(self, cgroup_path: str) -> Optional[float]:
        """CPU seconds of a cgroup with the same path in every hierarchy (as the engines make
        them), or None if it does not exist."""
        return self.cpu_seconds_at({CPU_V1: cgroup_path, V2: cgroup_path})

    def oom_kills(self, cgroup_path: str) -> Optional[int]:
        """OOM kills in a cgroup with the same path in every hierarchy, or None if it does not
        exist. On v2 memory.events counts its descendants' kills too (a removed child's
        included); v1's memory.oom_control counts the cgroup's own only."""
        h = self.hierarchies
        if "memory" in h.v1:
            return read_value(self.fs, host_path(h.v1["memory"], cgroup_path),
                              "memory.oom_control", oom_kills_v1)
        if h.v2 is not None:
            return read_value(self.fs, host_path(h.v2, cgroup_path), "memory.events",
                              oom_kills_v2)
        return None

    def cpu_seconds_of_pid(self, pid: int) -> Optional[float]:
        """CPU seconds of the cgroup a process is in, or None."""
        paths = self.of_pid(pid)
        return self.cpu_seconds_at(paths) if paths else None

    def exists(self, cgroup_path: str) -> bool:
        """Whether a cgroup of this path exists in any hierarchy."""
        path = clean_path(cgroup_path)
        if path is None:
            return False
        for mount in self.hierarchies.mounts():
            directory = host_path(mount, path)
            if directory is not None and self.fs.isdir(directory):
                return True
        return False

    def children(self, cgroup_path: str) -> Set[str]:
        """The names of the child cgroups of a path, in any hierarchy (empty if it has none
        or does not exist)."""
        path = clean_path(cgroup_path)
        found: Set[str] = set()
        if path is None:
            return found
        for mount in self.hierarchies.mounts():
            directory = host_path(mount, path)
            if directory is None:
                continue
            try:
                found.update(self.fs.listdir(directory))
            except OSError:
                continue
        return found

    def remove(self, cgroup_path: str) -> List[str]:
        """rmdir a cgroup in every hierarchy where it exists (it must have no processes and
        no child cgroups). Returns the directories that could not be removed.

        Raises:
            ValueError: the path is not absolute, climbs, or is a top-level cgroup.
        """
        path = clean_path(cgroup_path)
        if path is None or path.count("/") < 2:
            raise ValueError(f"refusing to remove cgroup {cgroup_path!r}")
        left = []
        for mount in self.hierarchies.mounts():
            directory = host_path(mount, path)
            if directory is None or not self.fs.isdir(directory):
                continue
            try:
                self.fs.rmdir(directory)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warning("cannot remove cgroup %s: %s", directory, e.strerror)
                    left.append(directory)
        return left
