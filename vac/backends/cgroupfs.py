# SPDX-License-Identifier: BSD-2-Clause
"""CPU seconds of any cgroup path on cgroup v1 (cpuacct.usage) and v2 (cpu.stat usage_usec).

Generic, for container backends whose engine makes the cgroups (Docker: /docker/<id> with the
cgroupfs driver, /system.slice/docker-<id>.scope with systemd, or under a cgroup parent we
name): where every hierarchy is mounted (/proc/self/mountinfo, whose root field matters inside
a cgroup namespace), which cgroup a process is in (/proc/<pid>/cgroup), the CPU seconds of a
cgroup, and removing an emptied cgroup from every hierarchy (the engine creates it in all of
them, not only in cpu, cpuacct and memory). Parsers are pure functions of file text; `Cgroups`
reads under an injectable proc root, so tests use recorded files.

A parent cgroup keeps the CPU time of children that have gone (v1 cpuacct charges every
ancestor; v2 flushes a removed child's usage into its parent), so reading a per-machine parent
gives the final CPU seconds after the container's own cgroup has been removed.
"""
from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional

from vac import fsutil

log = logging.getLogger(__name__)

V2 = ""             # key of the unified (v2) hierarchy in a /proc/<pid>/cgroup mapping
CPU_V1 = "cpuacct"  # the v1 controller that counts CPU time
READ_LIMIT = 64 * 1024
# v1 controllers as they appear among a cgroup mount's options (the rest are mount options).
V1_CONTROLLERS = frozenset(("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "net_cls",
                            "net_prio", "blkio", "perf_event", "hugetlb", "pids", "rdma", "misc",
                            "debug"))


@dataclass(frozen=True)
class Mount:
    """One mounted hierarchy: the cgroup path at its root, and where it is mounted."""

    root: str
    point: str


@dataclass(frozen=True)
class Hierarchies:
    """The mounted hierarchies: v1 ones by controller (and name=...), and the unified one."""

    v1: Mapping[str, Mount] = field(default_factory=dict)
    v2: Optional[Mount] = None

    @property
    def version(self) -> int:
        """1 if any v1 controller hierarchy is mounted (legacy or hybrid), else 2."""
        return 1 if any(c in V1_CONTROLLERS for c in self.v1) else 2

    def mounts(self) -> List[Mount]:
        """Every distinct hierarchy (co-mounted v1 controllers count once), v2 last."""
        found: List[Mount] = []
        for mount in list(self.v1.values()) + ([self.v2] if self.v2 else []):
            if mount not in found:
                found.append(mount)
        return found


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


def parse_mountinfo(text: str) -> Hierarchies:
    """The cgroup hierarchies in /proc/<pid>/mountinfo text (man 5 proc)."""
    v1: Dict[str, Mount] = {}
    v2: Optional[Mount] = None
    for line in text.splitlines():
        before, sep, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        mount = Mount(root=_unescape(fields[3]), point=_unescape(fields[4]))
        if tail[0] == "cgroup2":
            v2 = v2 or mount
        elif tail[0] == "cgroup" and len(tail) >= 3:
            for option in tail[2].split(","):
                if option in V1_CONTROLLERS or option.startswith("name="):
                    v1.setdefault(option, mount)
    return Hierarchies(v1=v1, v2=v2)


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        text = text.replace(code, char)
    return text


def parse_proc_cgroup(text: str) -> Dict[str, str]:
    """/proc/<pid>/cgroup as {controller: path}; the v2 line's key is V2 ("")."""
    found: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [V2]:
            found[controller] = parts[2]
    return found


def parse_cpuacct_usage(text: str) -> float:
    """cgroup v1 cpuacct.usage (nanoseconds) as seconds.

    Raises:
        ValueError: not a number of nanoseconds.
    """
    return int(text.strip()) / 1e9


def parse_cpu_stat(text: str) -> float:
    """cgroup v2 cpu.stat's usage_usec as seconds.

    Raises:
        ValueError: no usage_usec line with a number.
    """
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "usage_usec":
            return int(parts[1]) / 1e6
    raise ValueError("no usage_usec in cpu.stat")


class Cgroups:
    """The host's cgroup hierarchies, read once, and what can be read or removed in them."""

    def __init__(self, proc_root: str = "/proc", hierarchies: Optional[Hierarchies] = None):
        self.proc_root = proc_root
        self._hierarchies = hierarchies

    @property
    def hierarchies(self) -> Hierarchies:
        if self._hierarchies is None:
            text = fsutil.read_optional(os.path.join(self.proc_root, "self", "mountinfo"),
                                        1024 * 1024)
            self._hierarchies = parse_mountinfo(text or "")
        return self._hierarchies

    def of_pid(self, pid: int) -> Dict[str, str]:
        """{controller: cgroup path} of a process; empty if it has gone or is unreadable."""
        if pid <= 0:
            return {}
        text = fsutil.read_optional(os.path.join(self.proc_root, str(int(pid)), "cgroup"),
                                    READ_LIMIT)
        return parse_proc_cgroup(text) if text else {}

    def cpu_seconds_at(self, paths: Mapping[str, str]) -> Optional[float]:
        """CPU seconds of the cgroup named per hierarchy in `paths` (as of_pid gives):
        v1 cpuacct if that hierarchy is mounted and readable, else v2; None if neither."""
        h = self.hierarchies
        if CPU_V1 in paths and CPU_V1 in h.v1:
            value = _read(h.v1[CPU_V1], paths[CPU_V1], "cpuacct.usage", parse_cpuacct_usage)
            if value is not None:
                return value
        if V2 in paths and h.v2 is not None:
            return _read(h.v2, paths[V2], "cpu.stat", parse_cpu_stat)
        return None

    def cpu_seconds(self, cgroup_path: str) -> Optional[float]:
        """CPU seconds of a cgroup with the same path in every hierarchy (as the engines make
        them), or None if it does not exist."""
        return self.cpu_seconds_at({CPU_V1: cgroup_path, V2: cgroup_path})

    def cpu_seconds_of_pid(self, pid: int) -> Optional[float]:
        """CPU seconds of the cgroup a process is in, or None."""
        paths = self.of_pid(pid)
        return self.cpu_seconds_at(paths) if paths else None

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
            if directory is None or not os.path.isdir(directory):
                continue
            try:
                os.rmdir(directory)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    log.warning("cannot remove cgroup %s: %s", directory, e.strerror)
                    left.append(directory)
        return left


def _read(mount: Mount, cgroup_path: str, filename: str,
          parse: Callable[[str], float]) -> Optional[float]:
    directory = host_path(mount, cgroup_path)
    if directory is None:
        return None
    text = fsutil.read_optional(os.path.join(directory, filename), READ_LIMIT)
    if text is None:
        return None
    try:
        return parse(text)
    except ValueError:
        log.warning("unreadable %s in %s", filename, directory)
        return None
