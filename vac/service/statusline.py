# SPDX-License-Identifier: BSD-2-Clause
"""The line `systemctl status vacd` shows (systemd's STATUS=), from the cycle's record:

    cycle 812: 14 running, 2 idle (backoff lhcb), config OK
    cycle 3: 0 running, 4 idle, configuration rejected: /etc/vac.conf:[settings]:...
    cycle 1: 0 running, 4 idle, not configured yet: edit /etc/vac.conf

The record is read through vac.planfile (its one reader); idle reasons are counted by kind
and machinetype, never parsed from their text.
"""
from __future__ import annotations

from collections import Counter
from typing import List, Optional

from vac import planfile
from vac.errors import ConfigError, ConfigMissing

# Kinds the configuration part of the line already says.
CONFIG_KINDS = (planfile.NOT_CONFIGURED, planfile.CONFIG_REJECTED)
MAX_REASONS = 3


def line(number: int, record: Optional[planfile.PlanRecord],
         problem: Optional[ConfigError] = None) -> str:
    """The status of cycle `number`; `record` is what that cycle wrote (None: nothing), and
    `problem` the configuration's, said when the record does not say it."""
    if record is None:
        return f"cycle {number}: " + (_problem(problem) if problem is not None else
                                      "no record of the cycle (see journalctl -u vacd)")
    if problem is not None and record.config_state == planfile.CONFIG_OK:
        return f"cycle {number}: {_machines(record)}, {_problem(problem)}"
    parts = [f"cycle {number}: {_machines(record)}"]
    if record.errors:
        parts.append(f"{len(record.errors)} error{'s' if len(record.errors) != 1 else ''}")
    parts.append(config_part(record))
    return ", ".join(parts)


def config_part(record: planfile.PlanRecord) -> str:
    if record.config_state == planfile.CONFIG_OK:
        return "config OK"
    if record.config_state == planfile.CONFIG_MISSING:
        return record.config_error or "not configured yet: edit /etc/vac.conf"
    return f"configuration rejected: {record.config_error or 'see journalctl -u vacd -p err'}"


def _problem(problem: ConfigError) -> str:
    if isinstance(problem, ConfigMissing):
        return str(problem)
    return f"configuration rejected: {problem}"


def _machines(record: planfile.PlanRecord) -> str:
    idle = len(record.idle)
    text = ""
    if record.counts is not None:
        running, slots = record.counts[0], record.counts[1]
        text = f"{running} running, "
        if slots - running - idle > 0:   # a machine starting, or ending and not yet finished
            text += f"{slots - running - idle} starting/stopping, "
    reasons = _reasons(record)
    return text + f"{idle} idle" + (f" ({', '.join(reasons)})" if reasons else "")


def _reasons(record: planfile.PlanRecord) -> List[str]:
    """The idle reasons by kind and machinetype, the commonest first."""
    counted: Counter = Counter()
    for reason in record.idle.values():
        for part in reason.each():
            if part.kind in CONFIG_KINDS:
                continue
            label = part.kind.replace("_", " ")
            counted[f"{label} {part.machinetype}" if part.machinetype else label] += 1
    names = [name for name, _ in sorted(counted.items(), key=lambda kv: (-kv[1], kv[0]))]
    return names[:MAX_REASONS] + ([f"{len(names) - MAX_REASONS} more"]
                                  if len(names) > MAX_REASONS else [])
