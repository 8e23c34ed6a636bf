# SPDX-License-Identifier: BSD-2-Clause
"""What one cycle or refill did (CycleReport), for the record, the logs, metrics and tests."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set, Tuple

from vac import planfile
from vac.accounting.records import Settled
from vac.cycle.planner import Create
from vac.planfile import IdleReason

log = logging.getLogger(__name__)


@dataclass
class CycleReport:
    """What one cycle did; returned for tests, logs and `vac slots`.

    `idle` holds each idle slot's reason as text, `reasons` the same as data."""

    created: List[str] = field(default_factory=list)
    finished: List[str] = field(default_factory=list)
    destroyed: List[str] = field(default_factory=list)
    zombies: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    idle: Dict[str, str] = field(default_factory=dict)
    config_error: Optional[str] = None
    config_state: str = planfile.CONFIG_OK
    machine_errors: Dict[str, str] = field(default_factory=dict)  # slot -> this cycle's error
    accounting: Optional[Settled] = None  # APEL records written this cycle
    reasons: Dict[str, IdleReason] = field(default_factory=dict)
    failed: Dict[str, Tuple[str, str]] = field(default_factory=dict)  # slot -> (mt, error)
    machines: Dict[str, str] = field(default_factory=dict)  # slot -> machine made this cycle


def acted(report: CycleReport) -> Set[str]:
    """The slots a cycle or refill changed: their observation is stale from now on."""
    return set(report.created) | set(report.finished) | set(report.destroyed) | \
        set(report.zombies) | set(report.machine_errors)


def merge(report: CycleReport, part: CycleReport) -> None:
    """Add one creation's report to the cycle's."""
    report.created += part.created
    report.errors += part.errors
    report.reasons.update(part.reasons)
    report.machine_errors.update(part.machine_errors)
    report.failed.update(part.failed)
    report.machines.update(part.machines)


def log_failures(creates: Sequence[Create], report: CycleReport) -> None:
    """One ERROR line per machinetype whose creations failed in this cycle, with how many
    more of its slots stay idle for it (failed too, or deferred), never one per slot."""
    first: Dict[str, str] = {}
    for machinetype, error in report.failed.values():
        first.setdefault(machinetype, error)
    done = set(report.created)
    for machinetype, error in first.items():
        left = sum(1 for c in creates if c.machinetype == machinetype
                   and c.slot.name not in done) - 1
        more = (f" ({left} more slot{'s' if left != 1 else ''} of {machinetype} left idle "
                "this cycle)") if left > 0 else ""
        log.error("%s: creation failed: %s%s", machinetype, error, more)
