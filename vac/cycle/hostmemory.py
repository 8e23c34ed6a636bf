# SPDX-License-Identifier: BSD-2-Clause
"""Admission by memory, the cycle's side: the host's MemAvailable and the running machines'
usage for each plan, and a warning in vacd's log when memory starts (and stops) holding
creation back.

The decision is vac.cycle.memorygate (pure, in the planner). Here: HostMemory reads
MemAvailable (vac.host.memory) for each plan, a cycle's or a refill's, only while
memory_overcommit is set; the machines' usage comes from the last full cycle's reading of
their cgroups (vac.cycle.machinepressure reads memory.current beside their pressure), so it
is at most a cycle old: a machine that grew since counts more room than it has left, the
safe side. A host without MemAvailable gives no reading, and no stop, said once.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, Mapping, Optional

from vac.config.model import Config
from vac.cycle.planner import Plan
from vac.host import memory
from vac.host.memory import MachineKey, MemoryReading

log = logging.getLogger(__name__)


class HostMemory:
    """The host's memory for the planner: planner.plan(..., **inputs(config)), then
    kept(plan) says in the log when creation stops for memory and when it resumes."""

    def __init__(self, usage: Callable[[], Mapping[MachineKey, int]] = dict,
                 available: Callable[[], Optional[int]] = memory.read_available):
        self._usage = usage
        self._available = available
        self.stopped: Optional[str] = None   # the text of the stop, while there is one
        self.missing = False                 # MemAvailable could not be read (said once)

    @classmethod
    def beside(cls, host_load: bool, usage: Callable[[], Mapping[MachineKey, int]]
               ) -> HostMemory:
        """The host's memory beside the host's load average; none beside a synthetic one (a
        factory under test reads nothing of the host it runs on)."""
        return cls(usage) if host_load else cls(usage, lambda: None)

    def inputs(self, config: Config) -> Dict[str, Any]:
        """The planner's memory argument: this reading, or None (the option unset, or no
        MemAvailable)."""
        if config.settings.memory_overcommit is None:
            return {"memory": None}
        available = self._available()
        if available is None and not self.missing:
            log.warning("cannot read MemAvailable from /proc/meminfo: memory_overcommit has "
                        "no effect until it can be read")
        self.missing = available is None
        if available is None:
            return {"memory": None}
        return {"memory": MemoryReading(available, dict(self._usage()))}

    def kept(self, plan: Plan) -> Plan:
        """Log the start and the end of a stop for memory (once each: a stop ends only when
        a plan creates a machine, since a plan that tried none says nothing of memory); the
        plan."""
        if plan.memory_stop is not None:
            if self.stopped is None:
                log.warning("creation stops for memory: %s", plan.memory_stop.text)
            self.stopped = plan.memory_stop.text
        elif plan.creates and self.stopped is not None:
            log.info("creation resumes: memory for a new machine beside the running ones' "
                     "limits")
            self.stopped = None
        return plan
