"""The Singularity zombie killer: every process of singularity_user outside the cgroup of a
live machine is killed, and every Vac Apptainer cgroup no live machine owns is removed (the
original's cycle step, with Vac 03's adopted machines spared). `backend` is the
ApptainerBackend whose cgroups and records these read."""
from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, List, Optional

from vac.backends.apptainer import vac03
from vac.backends.apptainer.cgroupnames import CGROUP_PREFIX, LEGACY_CGROUP_PREFIX, cgroup_name
from vac.host import cgroups, procs
from vac.host.cgroupmachine import CgroupError, list_children
from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)


def kill_strays(backend: Any, live_names: Optional[Iterable[str]] = None) -> int:
    """The Singularity zombie killer, as the original's, once per cycle: SIGKILL every process of
    singularity_user outside the cgroup of a live machine, then remove every empty Vac
    Apptainer cgroup that no live machine owns. Returns the number of processes killed.

    A process is inside when any of its threads is (vac.host.procs.thread_cgroups): a machine's
    head that is executing from another thread shows the root cgroup for a moment, and was
    killed as a stray 0.3 s after its creation (a machine ended with no message).

    live_names: the live machines (default: live_machine_names() from the state dir).
    """
    if not backend.settings.singularity_user:
        return 0
    uid = backend.user().pw_uid
    live = set(backend.live_machine_names() if live_names is None else live_names)
    key = cgroups.membership_key(backend.hierarchy)
    owned = _live_cgroups(backend, live)
    inside = [backend._cgroup_named(c).relative_path for c in owned.values()]
    spared = _adopted_trees(backend, live)
    strays = []
    for pid in procs.pids_of_user(uid, backend.proc_root):
        where = procs.cgroups_of(pid, backend.proc_root).get(key, "")
        if pid not in spared and not _inside(pid, where, key, inside, backend.proc_root):
            log.warning("killing stray process %d of %s in cgroup %s",
                        pid, backend.settings.singularity_user, where or "?")
            strays.append(pid)
    killed = procs.kill_all(strays, backend.cgroup_fs.kill)
    _remove_unowned_cgroups(backend, set(owned.values()))
    return killed


def _inside(pid: int, where: str, key: str, inside: List[str], proc_root: str) -> bool:
    """Is the process (its own cgroup `where`) in one of the `inside` cgroups, or, if not,
    is any of its threads (read only then: a payload may have thousands)?"""
    if any(cgroups.in_cgroup(where, p) for p in inside):
        return True
    return any(cgroups.in_cgroup(thread.get(key, ""), p)
               for thread in procs.thread_cgroups(pid, proc_root) for p in inside)


def _live_records(backend: Any, live: Iterable[str]) -> Dict[str, dict]:
    paths = backend.settings.paths
    return {n: backend._record_of(MachineDir.for_slot(paths, n)) for n in live}


def _live_cgroups(backend: Any, live: Iterable[str]) -> Dict[str, str]:
    """Live machine -> the name of its cgroup (Vac 03's for an adopted machine)."""
    return {n: str(r["cgroup_name"]) if r.get("adopted") == vac03.ADOPTED
            else cgroup_name(n) for n, r in _live_records(backend, live).items()}


def _adopted_trees(backend: Any, live: Iterable[str]) -> set:
    """The processes of live adopted machines (an adopted machine without a cgroup is
    its head's process tree)."""
    spared: set = set()
    for record in _live_records(backend, live).values():
        if record.get("adopted") == vac03.ADOPTED:
            spared.update(backend._adopted_pids(record))
    return spared


def _remove_unowned_cgroups(backend: Any, owned: set) -> None:
    prefixes = (CGROUP_PREFIX, LEGACY_CGROUP_PREFIX)
    for child in list_children(backend.hierarchy, prefixes, backend.cgroup_parent,
                               backend.cgroup_fs):
        if child in owned:
            continue
        cgroup = backend._cgroup_named(child)
        try:
            # Its processes were strays and have been killed; wait for them to go.
            if cgroup.kill(timeout=1.0) and cgroup.remove(timeout=1.0):
                log.info("removed empty cgroup %s", cgroup.relative_path)
        except CgroupError as e:
            log.warning("cannot remove %s: %s", cgroup.relative_path, e)
