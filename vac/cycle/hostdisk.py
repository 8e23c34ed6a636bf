# SPDX-License-Identifier: BSD-2-Clause
"""Admission by free disk space, the cycle's side: the host's disk read for each plan, and a
warning in vacd's log when free space starts (and stops) holding creation back.

The decision is vac.cycle.diskgate (pure, in the planner). Here: HostDisk reads the
filesystems of the state directory, the scratch pool and the Docker data root (asked of the
Docker backend once it is available) and each mounted scratch's free space, through
vac.host.diskspace. Reading never raises and never stops a cycle: a place that cannot be read
is left out (said once in the log), and the running machines are managed whatever the disk.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Optional

from vac.backends import scratchmount
from vac.backends.docker import dataroot
from vac.config.model import Config
from vac.cycle.planner import Plan
from vac.errors import VacError
from vac.host import diskspace
from vac.host.diskspace import DiskReading
from vac.machine import scratch

log = logging.getLogger(__name__)


class HostDisk:
    """The host's disk for the planner: planner.plan(..., **inputs(config, pool)), then
    kept(plan) says in the log when creation stops for free space and when it resumes."""

    def __init__(self, read: Optional[Callable[[Config, Any, Dict[str, str]],
                                              Optional[DiskReading]]] = None):
        self._read = read if read is not None else read_host
        self._roots: Dict[str, str] = {}      # engine -> its data root, once known
        self.stopped: Optional[str] = None    # the text of the stop, while there is one
        self._problems: tuple = ()
        self.last: Optional[DiskReading] = None

    @classmethod
    def beside(cls, host_load: bool) -> HostDisk:
        """The host's disk beside the host's load average; none beside a synthetic one (a
        factory under test reads nothing of the host it runs on)."""
        if host_load:
            return cls()
        return cls(lambda config, pool, roots: None)

    def inputs(self, config: Config, pool: Any) -> Dict[str, Any]:
        """The planner's disk argument: this reading (None when there is none)."""
        try:
            reading = self._read(config, pool, self._roots)
        except (OSError, VacError) as e:   # never stop a cycle for it: no reading, no stop
            log.warning("cannot read the host's free disk space: %s", e)
            reading = None
        if reading is not None and reading.problems != self._problems and reading.problems:
            log.warning("free disk space not watched for %s", "; ".join(reading.problems))
        self._problems = reading.problems if reading is not None else ()
        self.last = reading
        return {"disk": reading}

    def kept(self, plan: Plan) -> Plan:
        """Log the start and the end of a stop for free disk space; the plan."""
        now = plan.disk_stop.text if plan.disk_stop is not None else None
        if now is not None and self.stopped is None:
            log.warning("creation stops for free disk space: %s", now)
        elif now is None and self.stopped is not None:
            log.info("creation resumes: free disk space back above the floor")
        self.stopped = now
        return plan


def read_host(config: Config, pool: Any, roots: Dict[str, str]) -> DiskReading:
    """The reading of this host for this configuration (the Docker data root when the pool's
    Docker backend answers; `roots` keeps it once known)."""
    s = config.settings
    made = scratchmount.mechanism(s.volume_group).name != scratch.NONE
    return diskspace.read(s.paths.state_dir, scratch.pool(s.paths.state_dir), scratch.mounted(),
                          docker_root(pool, roots), made)


def docker_root(pool: Any, roots: Dict[str, str]) -> Optional[str]:
    """The Docker engine's data root, if the pool has a Docker backend found available this
    cycle that says it (asked until it does); None otherwise."""
    if "docker" in roots or pool is None:
        return roots.get("docker")
    probe = pool.probed().get("docker")
    if probe is None or not probe.available:
        return None
    try:
        root = dataroot.data_root(pool.get("docker"))
    except (OSError, VacError):   # an engine that cannot say: not watched this cycle
        return None
    if root:
        roots["docker"] = root
    return root or None
