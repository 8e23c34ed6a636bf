# SPDX-License-Identifier: BSD-2-Clause
"""The end of every cycle and refill: plan.json (vac.planfile.PlanRecord), counts and
factory-error, written from the Plan and what the cycle met.

counts (in its file and in the record) are the planner's: the machines that run on after the
cycle's destroys, before its creations, as the original wrote them. A refill's record keeps
the last record's reasons for the slots it did not touch and the last cycle's errors beside
its own. factory-error says why nothing is created: the configuration's problem while it
lasts (removed at the first cycle with a good configuration, also after a restart: the last
record says the state), else the cycle's first failed creation (removed by a creation that
works).
"""
from __future__ import annotations

import os
from typing import Optional, Set, Tuple

from vac import fsutil, planfile
from vac.cycle.configstate import Loaded
from vac.cycle.errorcount import MachineErrors
from vac.cycle.observe import Observation
from vac.cycle.planner import Plan
from vac.cycle.report import CycleReport
from vac.host.pressure import as_dict
from vac.paths import Paths
from vac.planfile import PlanRecord


class Recorder:
    """Writes the record; remembers the last one (for refills) and the error counts."""

    def __init__(self) -> None:
        self.errors = MachineErrors()
        self.last: Optional[PlanRecord] = None
        # The last cycle's Plan.cvmfs_repositories (running containers'), for the keep-alive.
        self.cvmfs_repositories: Tuple[str, ...] = ()
        self._state: Optional[str] = None   # the configuration's state in the last record

    def write(self, loaded: Loaded, seen: Observation, plan: Plan, report: CycleReport,
              now: float, refilled: Optional[Set[str]] = None) -> PlanRecord:
        """Record a cycle, or a refill of the slots `refilled`; fills report.idle/reasons."""
        paths = loaded.config.settings.paths
        if self._state is None:
            previous = planfile.read(paths.plan)
            self._state = previous.config_state if previous is not None else planfile.CONFIG_OK
        fsutil.atomic_write(paths.counts, plan.counts.text())
        if refilled is None:   # a refill's plan sees only its slots
            self.cvmfs_repositories = plan.cvmfs_repositories
        idle = plan.idle_data()
        idle.update(report.reasons)
        errors = list(report.errors)
        if refilled is not None and self.last is not None:
            idle = {**{k: v for k, v in self.last.idle.items() if k not in refilled}, **idle}
            errors = list(self.last.errors) + errors
        report.reasons, report.idle = idle, {k: v.text for k, v in idle.items()}
        machines = {name: os.path.basename(d.path) for name, d in seen.directories.items()}
        machines.update(report.machines)
        c = plan.counts
        self.last = PlanRecord(
            time=now, idle=idle, config_state=loaded.state, config_error=loaded.error,
            errors=tuple(errors),
            machine_errors=self.errors.update(paths.plan, machines, report.machine_errors),
            unmanaged=dict(seen.unmanaged), notes=plan.notes, pressure=as_dict(plan.pressure),
            disk=plan.disk,
            counts=(c.running_machines, c.slots, c.running_processors, c.total_processors,
                    c.running_hs06))
        planfile.write(paths.plan, self.last)
        self._factory_error(paths, loaded, report)
        return self.last

    def _factory_error(self, paths: Paths, loaded: Loaded, report: CycleReport) -> None:
        reason = loaded.reason()
        first = next(iter(report.failed), None)
        if reason is not None:
            fsutil.atomic_write(paths.factory_error, reason.text + "\n")
        elif first is not None:
            fsutil.atomic_write(paths.factory_error, report.machine_errors[first] + "\n")
        elif report.created or self._state != planfile.CONFIG_OK:
            fsutil.unlink_if_present(paths.factory_error)
        self._state = loaded.state
