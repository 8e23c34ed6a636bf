# SPDX-License-Identifier: BSD-2-Clause
"""A new Docker machine's cgroup delegated to its container on cgroup v2, for a
payload that manages its own slot.

Right after the engine has started the container, while vacd is still creating the machine:
its processes are moved from the container's cgroup into the leaf /leaf below it, the cpu,
memory, pids and io controllers are enabled for the container's subtree, and the container's
own /sys/fs/cgroup (a cgroup2 mount of its private cgroup namespace, read-only as the engine
makes it) is remounted writable (vac.host.cgroupmount says when that is safe). Inside, the
container's root sees its cgroup as /sys/fs/cgroup and its processes in /leaf: it can make
children, move processes and set limits there, never write the limits of /sys/fs/cgroup
itself (the kernel refuses: nsdelegate) nor see or write anything above it. The container
gets no capability and no other privilege. A payload that wants the subtree waits until its
/sys/fs/cgroup is mounted rw (/proc/self/mountinfo; a root shell's `test -w` says yes on a
read-only mount): vacd moves the processes first and makes the mount writable last, moments
after the container started.

On cgroup v1, where it is not safe (no nsdelegate, the host's cgroup namespace), or where
the machinetype's cgroup_delegate is off, the machine runs as before, without delegation: its
/sys/fs/cgroup stays read-only and its processes stay in its cgroup. The reason is logged.

A delegated container's first process may sit in any child of its cgroup (the leaf, or where
the payload moved it), so its CPU seconds are read at its cgroup namespace's root, which is
the container's cgroup (cpu_seconds); the cgroup parent of Vac's, where there is one, is read
before that and counts the same.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from vac.host import cgroupmount, delegation
from vac.host.cgroups import Cgroups, V2, host_path

log = logging.getLogger(__name__)


def delegate(api: Any, container_id: str, name: str, cgroups: Cgroups,
             wanted: bool = True) -> bool:
    """Delegate a started container's cgroup to it (if wanted: its machinetype's
    cgroup_delegate); False where it is not wanted or cannot be (logged).
    Engine errors are the caller's (it runs inside the backend's error boundary)."""
    h = cgroups.hierarchies
    if h.for_machines().version != 2 or h.v2 is None:
        return False
    if not wanted:
        log.info("%s: no cgroup delegation: cgroup_delegate is off for its machinetype", name)
        return False
    pid = int(((api.inspect_container(container_id) or {}).get("State") or {}).get("Pid") or 0)
    if pid <= 0:
        log.info("%s: no cgroup delegation: the container has no process", name)
        return False
    path = cgroups.of_pid(pid).get(V2)
    top = host_path(h.v2, path) if path else None
    try:
        if top is None or path is None:
            raise delegation.DelegationError(str(path), "not in the unified hierarchy")
        cgroupmount.check(pid, path, cgroups.proc_root)
        delegation.move_all(cgroups.fs, top, f"{top}/{delegation.LEAF}")
        cgroupmount.make_writable(pid, path, cgroups.proc_root)
    except (cgroupmount.CgroupMountError, delegation.DelegationError) as e:
        log.warning("%s: no cgroup delegation: %s", name, e)
        return False
    log.info("%s: cgroup %s delegated to the container (its /sys/fs/cgroup, processes in /%s)",
             name, path, delegation.LEAF)
    return True


def cpu_seconds(pid: int, cgroups: Cgroups) -> Optional[float]:
    """CPU seconds of a live container by its first process: of the whole cgroup the container
    sees as its /sys/fs/cgroup (children included) where that is an ancestor of the process's
    own cgroup, else of the process's own cgroup (v1, the host's cgroup namespace); None if
    the process has gone."""
    paths = cgroups.of_pid(pid)
    top = cgroupmount.namespace_root(pid, paths.get(V2), cgroups.proc_root)
    value = cgroups.cpu_seconds_at({V2: top}) if top else None
    if value is None and paths:
        value = cgroups.cpu_seconds_at(paths)
    return value
