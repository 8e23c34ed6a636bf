# SPDX-License-Identifier: BSD-2-Clause
"""The pure parts of a refill: a machine ended, so finish it and fill its slot now.

A refill re-observes only the slots it was woken for (and those the last cycle or refill acted
on, whose last observation is stale), keeps the rest of the last cycle's observation, and plans
as a cycle does, but only the named slots may be finished, destroyed or filled: every other
free slot is hidden from the planner for this refill (the periodic cycle fills those).
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Set

from vac.cycle.observe import Observation
from vac.cycle.planner import Plan
from vac.machine.directory import MachineState
from vac.machine.observed import Observed


def merge(last: Observation, fresh: Observation) -> Observation:
    """The last observation with the freshly observed slots replaced."""
    again = {o.slot.name for o in fresh.observed}
    merged = Observation(
        observed=[o for o in last.observed if o.slot.name not in again] + fresh.observed,
        directories={k: v for k, v in last.directories.items() if k not in again},
        unmanaged={k: v for k, v in last.unmanaged.items() if k not in again},
        backend_ids={k: v for k, v in last.backend_ids.items() if k not in again},
        models={k: v for k, v in last.models.items() if k not in again})
    merged.observed.sort(key=lambda o: o.slot.ordinal)
    for field in ("directories", "unmanaged", "backend_ids", "models", "adopt", "errors"):
        getattr(merged, field).update(getattr(fresh, field))
    return merged


def hide_other_free_slots(observed: Iterable[Observed], names: Set[str]) -> list:
    """Free slots not named become Unknown with no processors: the planner leaves them."""
    return [o if o.slot.name in names or not (o.machinetype is None or o.finished)
            else Observed(slot=o.slot, machinetype="?", state=MachineState.UNKNOWN,
                          processors=0)
            for o in observed]


def restrict(plan: Plan, names: Set[str]) -> Plan:
    """Only what concerns the named slots: no heartbeats or shutdown-time changes elsewhere."""
    return dataclasses.replace(
        plan, heartbeats=(), lower_shutdown=(),
        destroys=tuple(d for d in plan.destroys if d.name in names),
        finishes=tuple(f for f in plan.finishes if f.name in names),
        creates=tuple(c for c in plan.creates if c.slot.name in names),
        idle=tuple(i for i in plan.idle if i.slot.name in names))
