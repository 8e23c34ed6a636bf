# SPDX-License-Identifier: BSD-2-Clause
"""A machine's cgroup parent as Podman leaves it: beside the container's own cgroup Podman puts
each container's conmon (its monitor process, which after the container's exit also runs
Podman's exit command, a whole `podman container cleanup`) in a cgroup of its own under the
same parent:

    cgroupfs manager   the child `conmon` (beside libpod-<id>); Podman leaves it behind when
                       the container is removed
    systemd manager    the transient scope libpod-conmon-<id>.scope in the parent slice
                       (beside the container's libpod-<id>.scope); systemd removes it once
                       conmon and the exit command have left it

The Docker backend's parent code (vac.backends.docker.cgroupparent) reads and removes parents
through a Cgroups; PodmanCgroups is that Cgroups for Podman's parents:

    cpu_seconds(parent)  the parent's CPU seconds less conmon's, so that a machine is charged
                         for its container's processes alone, as under Docker
    remove(parent)       waits (bounded) for conmon to leave, removes the conmon child first
                         (a scope: waits for systemd to remove it), then the parent
    let_conmon_leave(parent)  the same wait, alone, once the container has ended (the Podman
                         backend's destroy, before a slice is stopped with conmon still in it)

Exact and approximate: a parent's usage counts its removed descendants too (v2 flushes a
removed child's usage into its parent; v1 cpuacct charges every ancestor), so once conmon's
scope has gone its CPU can no longer be read apart. While a conmon cgroup exists the reading
is exact (the `conmon` child always, until Vac removes it). Each reading remembers every conmon
cgroup's last usage and, if the container had ended by then (no other child populated, as v2's
cgroup.events says; on v1, none left), the machine's value: once the scopes have gone that
value is returned, exact, as the container can add nothing more. Without it (the container
still ran at the last reading with a scope there, or this process never saw the scope: a vacd
restarted since) the parent's usage less the usage last read of each scope is returned, which
charges the machine for conmon's CPU since that reading (a fraction of a second, mostly the
exit command), or all of conmon's if no reading saw it.

A reading is not atomic: conmon may run between the reads of its cgroups and the parent's
(under TCG its exit command ran 16 ms between them). So conmon's cgroups are read before and
after the parent's, up to BRACKET_TRIES times until the two agree (exact), and the later ones
are subtracted: the machine is never charged for conmon's CPU, at worst a little less than its
own. After the container's end each reading is a lower bound of one constant, and the highest
is kept; no value returned for a parent is ever below one returned before.

Every other cgroup path is passed through unchanged.
"""
from __future__ import annotations

import posixpath
import time
from typing import Dict, List, Optional, Set, Tuple

from vac.host.cgroups import Cgroups, host_path, parse_flat_keyed, read_value

CONMON = "conmon"                  # the cgroupfs manager's child
SCOPE_PREFIX = "libpod-conmon-"    # the systemd manager's scope, libpod-conmon-<id>.scope
SCOPE_SUFFIX = ".scope"
EXIT_SECONDS = 10.0    # how long conmon may take to leave once its container has ended
POLL_SECONDS = 0.1
BRACKET_TRIES = 3      # readings of conmon's cgroups around the parent's, until two agree


def is_scope(name: str) -> bool:
    """Is a child's name that of conmon's scope under the systemd manager?"""
    return name.startswith(SCOPE_PREFIX) and name.endswith(SCOPE_SUFFIX) and \
        len(name) > len(SCOPE_PREFIX) + len(SCOPE_SUFFIX)


def is_monitor(name: str) -> bool:
    """Is a child's name that of a cgroup Podman runs conmon in (either manager)?"""
    return name == CONMON or is_scope(name)


class Seen:
    """What readings of one parent have seen: each conmon cgroup's last CPU seconds, the
    machine's CPU seconds read after its container had ended (None: not yet seen), and the
    value last returned."""

    def __init__(self, monitors: Dict[str, float], final: Optional[float], last: float):
        self.monitors = monitors
        self.final = final
        self.last = last


class PodmanCgroups(Cgroups):
    """Cgroups that know the cgroups Podman makes for conmon under a container's parent."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._seen: Dict[str, Seen] = {}

    def _kids(self, cgroup_path: str) -> Set[str]:
        """The child cgroups' names of a path deep enough to be a parent (none for conmon's
        own cgroups)."""
        if cgroup_path.count("/") < 2 or is_monitor(posixpath.basename(cgroup_path)):
            return set()
        return self.children(cgroup_path)

    def _busy(self, cgroup_path: str) -> bool:
        """Has a cgroup processes still, in any hierarchy?"""
        for mount in self.hierarchies.mounts():
            directory = host_path(mount, cgroup_path)
            if directory is None or not self.fs.isdir(directory):
                continue
            try:
                if self.fs.read(posixpath.join(directory, "cgroup.procs")).strip():
                    return True
            except OSError:
                continue
        return False

    def _live(self, cgroup_path: str) -> bool:
        """Has a cgroup or a descendant processes? v2's cgroup.events says; without it (v1) a
        cgroup that is still there counts as live (the engine removes a container's cgroup
        once it has ended)."""
        v2 = self.hierarchies.v2
        directory = host_path(v2, cgroup_path) if v2 is not None else None
        events = read_value(self.fs, directory, "cgroup.events", parse_flat_keyed)
        if events is not None and "populated" in events:
            return events["populated"] != 0
        return self.exists(cgroup_path)

    def _ended(self, cgroup_path: str, kids: Set[str]) -> bool:
        """Has every process under a parent (with these children) but conmon's ended?"""
        return not any(self._live(posixpath.join(cgroup_path, name))
                       for name in kids if not is_monitor(name))

    def _staying(self, cgroup_path: str) -> bool:
        """Is conmon still in this cgroup (a scope: is the scope still there)?"""
        if is_scope(posixpath.basename(cgroup_path)):
            return self.exists(cgroup_path)
        return self._busy(cgroup_path)

    def _wait_for_monitors(self, cgroup_path: str, names: List[str]) -> None:
        deadline = time.monotonic() + EXIT_SECONDS
        paths = [posixpath.join(cgroup_path, name) for name in names]
        while any(self._staying(p) for p in paths) and time.monotonic() < deadline:
            self.fs.sleep(POLL_SECONDS)     # conmon outlives its container briefly

    def let_conmon_leave(self, cgroup_path: str) -> None:
        """If the container under a parent has ended, wait (bounded) for conmon to leave, so
        that its exit command is not killed when the parent is stopped."""
        kids = self._kids(cgroup_path)
        names = sorted(n for n in kids if is_monitor(n))
        if names and self._ended(cgroup_path, kids):
            self._wait_for_monitors(cgroup_path, names)

    def forget(self, cgroup_path: str) -> None:
        """Drop what readings of a parent have seen (the parent has gone)."""
        self._seen.pop(cgroup_path, None)

    def remove(self, cgroup_path: str) -> List[str]:
        names = sorted(n for n in self._kids(cgroup_path) if is_monitor(n))
        if names:
            self._wait_for_monitors(cgroup_path, names)
        for name in names:
            left = super().remove(posixpath.join(cgroup_path, name))
            if left:
                return left
        self.forget(cgroup_path)
        return super().remove(cgroup_path)

    def cpu_seconds(self, cgroup_path: str) -> Optional[float]:
        kids = self._kids(cgroup_path)
        names = sorted(n for n in kids if is_monitor(n))
        seen = self._seen.get(cgroup_path)
        if not names and seen is None:
            return super().cpu_seconds(cgroup_path)
        ended = self._ended(cgroup_path, kids)
        read, total = self._bracketed(cgroup_path, names)
        if total is None:
            self.forget(cgroup_path)
            return None
        return self._charged(cgroup_path, total, read, ended, seen)

    def _monitors(self, cgroup_path: str, names: List[str]) -> Dict[str, float]:
        read = {}
        for name in names:
            usage = super().cpu_seconds(posixpath.join(cgroup_path, name))
            if usage is not None:
                read[name] = usage
        return read

    def _bracketed(self, cgroup_path: str,
                   names: List[str]) -> Tuple[Dict[str, float], Optional[float]]:
        """conmon's cgroups read after the parent's total, and that total: read until the
        readings of conmon's before and after the total agree (at most BRACKET_TRIES)."""
        read: Dict[str, float] = {}
        total = None
        for _ in range(BRACKET_TRIES):
            before = self._monitors(cgroup_path, names)
            total = super().cpu_seconds(cgroup_path)
            read = self._monitors(cgroup_path, names)
            if total is None or read == before:
                break
        return read, total

    def _charged(self, cgroup_path: str, total: float, read: Dict[str, float], ended: bool,
                 seen: Optional[Seen]) -> float:
        """The machine's share of a parent's total, given conmon's cgroups read now, and
        what is remembered of them."""
        monitors = dict(seen.monitors) if seen is not None else {}
        for name, usage in read.items():
            monitors[name] = max(usage, monitors.get(name, 0.0))
        value = max(0.0, total - sum(monitors.values()))
        final = seen.final if seen is not None and ended else None
        if read:
            final = max(value, final or 0.0) if ended else None   # bounds of one constant
        if final is not None:
            value = final        # the container had ended when it was read
        value = max(value, seen.last if seen is not None else 0.0)
        self._seen[cgroup_path] = Seen(monitors, final, value)
        return value
