# SPDX-License-Identifier: BSD-2-Clause
"""The host's pressure (PSI) on the status page and /api/factory, from the last cycle's
record (plan.json): one row per resource and line (some/full) with its avg10/avg60/avg300,
the admission threshold where one gates that line, and whether creation pauses for it.

A host without PSI (no pressure in the record) gives {"available": False, "rows": []}; the
page then says creation is gated by the load average alone. Pure: the record and the
settings in, plain data out.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from vac import planfile
from vac.config.model import Settings

RESOURCES = ("cpu", "memory", "io")
LINES = ("some", "full")


def thresholds(settings: Settings) -> Dict[tuple, Optional[float]]:
    """(resource, line) -> the avg10 above which creation pauses (None: not gated)."""
    return {("cpu", "some"): settings.pressure_cpu_some,
            ("memory", "some"): settings.pressure_memory_some,
            ("io", "full"): settings.pressure_io_full}


def paused_resources(record: Optional[planfile.PlanRecord]) -> Set[str]:
    """The resources the last cycle's idle reasons pause creation for."""
    found: Set[str] = set()
    for reason in record.idle.values() if record is not None else ():
        for single in reason.each():
            if single.kind == planfile.PRESSURE and single.resource:
                found.add(single.resource)
    return found


def host_pressure(record: Optional[planfile.PlanRecord], settings: Settings) -> Dict[str, Any]:
    """{"available", "time", "paused": [resource...], "rows": [{resource, line, avg10,
    avg60, avg300, threshold, over}]}."""
    host = record.pressure if record is not None and record.pressure else None
    paused = sorted(paused_resources(record))
    if not host:
        return {"available": False, "time": None, "paused": paused, "rows": []}
    gates, rows = thresholds(settings), []
    for resource in RESOURCES:
        for line in LINES:
            fields = (host.get(resource) or {}).get(line)
            if not isinstance(fields, dict):
                continue
            limit = gates.get((resource, line))
            avg10 = fields.get("avg10")
            rows.append({"resource": resource, "line": line, "avg10": avg10,
                         "avg60": fields.get("avg60"), "avg300": fields.get("avg300"),
                         "threshold": limit,
                         "over": limit is not None and avg10 is not None and avg10 > limit})
    return {"available": True, "time": host.get("time"), "paused": paused, "rows": rows}
