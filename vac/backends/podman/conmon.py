# SPDX-License-Identifier: BSD-2-Clause
"""A machine's cgroup parent as Podman leaves it: with the cgroupfs manager Podman runs each
container's conmon (its monitor process) in the child cgroup `conmon` of the container's cgroup
parent, beside the container's own libpod-<id> cgroup, and leaves that child behind when the
container is removed. The Docker backend's parent code (vac.backends.docker.cgroupparent) reads
and removes parents through a Cgroups; PodmanCgroups is that Cgroups for Podman's parents:

    remove(parent)       removes the conmon child first (empty once the container is gone),
                         so the parent itself can go
    cpu_seconds(parent)  the parent's CPU seconds less conmon's, so a machine is charged for
                         its container's processes alone, as under Docker

Every other cgroup path is passed through unchanged.
"""
from __future__ import annotations

import posixpath
import time
from typing import List, Optional

from vac.host.cgroups import Cgroups, host_path

CONMON = "conmon"
EXIT_SECONDS = 10.0    # how long conmon may take to leave once its container is removed


class PodmanCgroups(Cgroups):
    """Cgroups that know the conmon child Podman makes under a container's cgroup parent."""

    def _conmon(self, cgroup_path: str) -> Optional[str]:
        """The conmon child of a path, if the path is deep enough to be a parent and has one."""
        if cgroup_path.count("/") < 2 or posixpath.basename(cgroup_path) == CONMON:
            return None
        child = posixpath.join(cgroup_path, CONMON)
        return child if super().exists(child) else None

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

    def remove(self, cgroup_path: str) -> List[str]:
        conmon = self._conmon(cgroup_path)
        if conmon is not None:
            deadline = time.monotonic() + EXIT_SECONDS
            while self._busy(conmon) and time.monotonic() < deadline:
                self.fs.sleep(0.1)      # conmon outlives its container's removal briefly
            left = super().remove(conmon)
            if left:
                return left
        return super().remove(cgroup_path)

    def cpu_seconds(self, cgroup_path: str) -> Optional[float]:
        total = super().cpu_seconds(cgroup_path)
        conmon = self._conmon(cgroup_path) if total is not None else None
        if conmon is None:
            return total
        monitor = super().cpu_seconds(conmon) or 0.0
        return max(0.0, total - monitor)
