# SPDX-License-Identifier: BSD-2-Clause
"""Admission by pressure, the cycle's side: the host's PSI read each cycle and refill, the
resources paused kept from one plan to the next, and a host without PSI said once.

The decision is vac.cycle.gate.pressure_stop (pure, in the planner). Here: a HostPressure
reads the host's /proc/pressure through vac.host.pressure; a host without PSI (no
/proc/pressure, psi=0) gives no reading, and vacd's log says once that creation is gated by
the load average alone; a file that cannot be parsed does the same, with its error, once per
distinct error. The pause and shedding's state (vac.cycle.shedding) live in memory: a
restarted vacd judges afresh from the reading, its shedding grace starting again. A shed
that a refill decided but did not carry out (its victim not among the refill's slots) is not
kept: the next cycle decides again.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Dict, FrozenSet, Optional

from vac.cycle.planner import Plan
from vac.cycle.shedding import ShedState
from vac.host import pressure
from vac.host.pressure import NoPressure, Reading

log = logging.getLogger(__name__)

FALLBACK = "creation is gated by the load average alone (overload_per_processor)"


class HostPressure:
    """The host's pressure for the planner: planner.plan(..., **inputs(now)), then
    kept(plan) remembers the resources it paused."""

    def __init__(self, read: Optional[Callable[[float], Reading]] = None):
        self._read = read if read is not None else pressure.host_gauge().read
        self.paused: FrozenSet[str] = frozenset()
        self.shed = ShedState()
        self.problem: Optional[str] = None   # why there is no reading, while there is none
        self.last: Optional[Reading] = None

    @classmethod
    def beside(cls, host_load: bool) -> HostPressure:
        """The host's PSI beside the host's load average; none, without a word, beside a
        synthetic one (a factory under test reads nothing of the host it runs on)."""
        if host_load:
            return cls()

        def nothing(now: float) -> Reading:
            raise NoPressure("")
        return cls(nothing)

    def inputs(self, now: float) -> Dict[str, Any]:
        """The planner's pressure arguments: this reading and the resources paused so far."""
        return {"pressure": self.read(now), "pressure_paused": self.paused,
                "shed_state": self.shed}

    def kept(self, plan: Plan) -> Plan:
        """Remember the resources the plan paused and its shedding state; the plan."""
        self.keep(plan.pressure_paused)
        state = plan.shed_state
        if state.sheds == self.shed.sheds or \
                any(d.name == state.last_machine for d in plan.destroys):
            self.shed = state
        return plan

    def read(self, now: float) -> Optional[Reading]:
        """This cycle's reading, or None (no PSI, or unreadable: the load gate decides)."""
        try:
            reading = self._read(now)
        except (NoPressure, ValueError) as e:
            self._lost(str(e))
            return None
        if self.problem:
            log.info("host pressure (PSI) readable again: creation is gated by it too")
        self.problem = None
        self.last = reading
        return reading

    def keep(self, paused: FrozenSet[str]) -> None:
        """The resources the plan paused, for the next plan's hysteresis."""
        self.paused = frozenset(paused)

    def _lost(self, problem: str) -> None:
        if problem and problem != self.problem:
            log.warning("no host pressure (PSI): %s; %s", problem, FALLBACK)
        self.problem = problem
        self.last = None
