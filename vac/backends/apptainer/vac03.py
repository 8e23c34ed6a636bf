# SPDX-License-Identifier: BSD-2-Clause
"""Recognising the Singularity machines the original Vac 03 started, so a switched factory
adopts them instead of killing them as strays.

Vac 03 forked a child that joined the cgroups `vac/singularity-<job_id>`
(cpu and memory), dropped to singularity_user and exec'd `singularity exec --contain --workdir
<machine dir>/mnt ...`; it wrote the child's pid to <machine dir>/pid and the id to
jobfeatures/job_id. A machine directory without our backend.json is taken for Vac 03's only if
its `pid` names a live process of singularity_user that is in the cgroup
`<parent>/singularity-<job_id>`, or, where that cgroup does not exist (it failed to make it),
that is in no cgroup under <parent> at all; the machine is then that process and its
descendants. A process is never adopted for its uid or name alone.
"""
from __future__ import annotations

import os
import re
from typing import Any, Dict, List, Optional

from vac.host import cgroups, procs
from vac.host.cgroupmachine import MachineCgroup
from vac.machine.directory import MachineDir

ADOPTED = "vac03"
LEGACY_PREFIX = "singularity-"
JOB_ID_RE = re.compile(r"\A[0-9A-Za-z][0-9A-Za-z-]{0,79}\Z")
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def head_pid(directory: MachineDir) -> Optional[int]:
    text = directory.read("pid", 64)
    value = text.strip() if text else ""
    return int(value) if value.isdigit() and 0 < int(value) < 2 ** 22 else None


def legacy_cgroup_name(directory: MachineDir) -> Optional[str]:
    job_id = directory.job_id
    return LEGACY_PREFIX + job_id if job_id and JOB_ID_RE.match(job_id) else None


def recognise(directory: MachineDir, uid: int, hierarchy: cgroups.Hierarchy, parent: str,
              proc_root: str = "/proc") -> Optional[Dict[str, Any]]:
    """The backend.json record of the machine Vac 03 started in this directory, or None."""
    pid, name = head_pid(directory), legacy_cgroup_name(directory)
    if pid is None or name is None or directory.exists("finished"):
        return None
    info = procs.read(pid, proc_root)
    if info is None or not info.alive or info.uid != uid:
        return None
    legacy = MachineCgroup(hierarchy, name, parent)
    where = procs.cgroups_of(pid, proc_root).get(cgroups.membership_key(hierarchy), "")
    if legacy.exists():
        if not cgroups.in_cgroup(where, legacy.relative_path):
            return None
    elif cgroups.in_cgroup(where, f"/{parent}"):
        return None                      # in another machine's cgroup: not this one's
    inode = _inode(legacy.dir("memory")) if legacy.exists() else None
    rss = directory.read("jobfeatures/max_rss_bytes", 64) or ""
    return {"backend": "apptainer", "adopted": ADOPTED, "pid": pid,
            "start_time": info.start_time, "uid": uid, "job_id": directory.job_id,
            "cgroup_name": name, "cgroup": legacy.relative_path, "cgroup_dirs": legacy.dirs,
            "cgroup_inode": inode,            # None: no cgroup, the process tree is the machine
            "memory_limit_bytes": int(rss.strip()) if rss.strip().isdigit() else 0}


def _inode(path: Optional[str]) -> Optional[int]:
    try:
        return os.stat(path).st_ino if path else None
    except OSError:
        return None


def _stat_fields(pid: int, proc_root: str) -> Optional[List[str]]:
    """Fields 3.. of /proc/<pid>/stat (after the command name), or None if gone."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat")) as f:
            text = f.read(4096)
        return text[text.rindex(")") + 2:].split()
    except (OSError, ValueError):
        return None


def tree(pid: int, uid: int, proc_root: str = "/proc") -> List[int]:
    """pid and its live descendants owned by uid (by parent pid, /proc field 4)."""
    children: Dict[int, List[int]] = {}
    for other in procs.pids_of_user(uid, proc_root):
        fields = _stat_fields(other, proc_root)
        if fields and len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(other)
    found, todo = [], [pid]
    while todo and len(found) < 100000:
        current = todo.pop()
        if current in found:
            continue
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def tree_cpu_seconds(pids: List[int], proc_root: str = "/proc") -> float:
    """utime + stime + cutime + cstime of the processes (reaped descendants included)."""
    total = 0
    for pid in pids:
        fields = _stat_fields(pid, proc_root)
        if fields and len(fields) > 14:
            total += sum(int(v) for v in fields[11:15] if v.lstrip("-").isdigit())
    return total / float(TICKS)
