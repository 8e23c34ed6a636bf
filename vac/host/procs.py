# SPDX-License-Identifier: BSD-2-Clause
"""Processes as /proc shows them: identity by pid + start time, owner, cgroup, SIGKILL.

A pid alone is not an identity (pids are recycled); a pid with its start time (field 22 of
/proc/<pid>/stat, clock ticks since boot) is. Parsers are pure functions of file text and
readers take a proc root, so tests can point them at a fake /proc under tmp_path.
"""
from __future__ import annotations

import logging
import os
import signal
import stat
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Optional, Tuple

log = logging.getLogger(__name__)


def parse_stat(text: str) -> Tuple[str, int]:
    """(state, start time in clock ticks) from /proc/<pid>/stat text.

    The command name (field 2) may hold spaces and parentheses, so fields are counted from
    the last ')'. Raises ValueError (or IndexError) on malformed text.
    """
    rest = text[text.rindex(")") + 2:].split()
    return rest[0], int(rest[19])


def parse_status_uid(text: str) -> Optional[int]:
    """The real uid from /proc/<pid>/status text."""
    for line in text.splitlines():
        if line.startswith("Uid:"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return None


def parse_cgroup(text: str) -> Dict[str, str]:
    """/proc/<pid>/cgroup as {controller: path}; the v2 line ("0::/path") is under "".

    A line naming several controllers ("3:cpu,cpuacct:/x") gives each its own key; a named
    hierarchy keeps its "name=..." key.
    """
    found: Dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            found[controller] = parts[2]
    return found


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    state: str
    start_time: int
    uid: Optional[int]

    @property
    def alive(self) -> bool:
        """Running or sleeping; a zombie (Z) or dead (X) process has ended."""
        return self.state not in ("Z", "X", "x")


def read(pid: int, proc_root: str = "/proc") -> Optional[ProcessInfo]:
    """State, start time and real uid of a process; None if it has gone."""
    base = os.path.join(proc_root, str(int(pid)))
    try:
        with open(os.path.join(base, "stat")) as f:
            state, start = parse_stat(f.read())
        with open(os.path.join(base, "status")) as f:
            uid = parse_status_uid(f.read())
    except (OSError, ValueError, IndexError):
        return None
    return ProcessInfo(int(pid), state, start, uid)


def is_same(pid: int, start_time: int, uid: int, proc_root: str = "/proc") -> bool:
    """Is `pid` still the live process that started at `start_time` as `uid`?"""
    info = read(pid, proc_root)
    return info is not None and info.alive and info.start_time == start_time and info.uid == uid


def pids_of_user(uid: int, proc_root: str = "/proc") -> List[int]:
    """Live processes whose real uid is `uid`."""
    found = []
    for entry in os.listdir(proc_root):
        if entry.isdigit():
            info = read(int(entry), proc_root)
            if info is not None and info.alive and info.uid == uid:
                found.append(info.pid)
    return sorted(found)


def cgroups_of(pid: int, proc_root: str = "/proc") -> Dict[str, str]:
    """{controller: cgroup path} of a process ({} if it has gone)."""
    try:
        with open(os.path.join(proc_root, str(int(pid)), "cgroup")) as f:
            return parse_cgroup(f.read())
    except OSError:
        return {}


def thread_cgroups(pid: int, proc_root: str = "/proc") -> List[Dict[str, str]]:
    """{controller: cgroup path} of each thread of the process still listed in its task/
    ([] if it has gone). The process's own line (cgroups_of) is its leader thread's: while a
    multi-threaded process execs from another thread, the leader is exiting and the kernel
    has already moved it to the root cgroup ("/"), where the exec'ing thread is not (seen
    with Apptainer's Go binary executing its starter)."""
    tasks = os.path.join(proc_root, str(int(pid)), "task")
    try:
        tids = [t for t in os.listdir(tasks) if t.isdigit()]
    except OSError:
        return []
    found = []
    for tid in tids:
        try:
            with open(os.path.join(tasks, tid, "cgroup")) as f:
                found.append(parse_cgroup(f.read()))
        except OSError:
            continue
    return found


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def kill_all(pids: Iterable[int], kill: Callable[[int], None] = sigkill) -> int:
    """SIGKILL each pid; the number signalled (ones that had gone already are not counted)."""
    count = 0
    for pid in pids:
        try:
            kill(pid)
            count += 1
        except ProcessLookupError:
            pass
        except OSError as e:
            log.warning("cannot kill pid %d: %s", pid, e.strerror or e)
    return count


def unsearchable_ancestor(path: str, uid: int, gids: Iterable[int]) -> Optional[str]:
    """The first directory above `path` that `uid` (with groups `gids`) may not search, or
    None if the user can reach `path`. Root's view of permissions is not the user's."""
    gids = set(gids)
    current = os.path.dirname(os.path.abspath(path))
    while True:
        try:
            st = os.stat(current)
        except OSError:
            return current
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent
