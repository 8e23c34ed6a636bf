# SPDX-License-Identifier: BSD-2-Clause
"""The host's disk on the status page and /api/factory, from the last cycle's record
(plan.json): one row per filesystem that admission by free disk space watches (its path, what
it holds, free, size and floor bytes, and whether creation stops for it), the bytes the
machines' scratch may still grow into, and each running machine's scratch bytes in use (its
cell's `scratch_bytes`).

A record without a disk reading (a factory under test, or one written before it was read)
gives {"available": False, "rows": []}. Pure: the record in, plain data out.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Set

from vac import planfile


def short_paths(record: Optional[planfile.PlanRecord]) -> Set[str]:
    """The filesystems the last cycle's idle reasons stop creation for."""
    return {single.resource for reason in (record.idle.values() if record is not None else ())
            for single in reason.each() if single.kind == planfile.DISK and single.resource}


def host_disk(record: Optional[planfile.PlanRecord]) -> Dict[str, Any]:
    """{"available", "growth_bytes", "rows": [{path, holds, free_bytes, size_bytes,
    floor_bytes, short}]}."""
    disk = record.disk if record is not None else None
    if not disk:
        return {"available": False, "growth_bytes": None, "rows": []}
    short = short_paths(record)
    rows = [{"path": fs["path"], "holds": list(fs.get("holds", ())),
             "free_bytes": fs.get("free_bytes"), "size_bytes": fs.get("size_bytes"),
             "floor_bytes": fs.get("floor_bytes"), "short": fs["path"] in short}
            for fs in disk.get("filesystems", ())]
    return {"available": True, "growth_bytes": disk.get("scratch_growth_bytes"), "rows": rows}


def add_scratch(cells: List[Dict[str, Any]], record: Optional[planfile.PlanRecord]) -> None:
    """Each running machine's scratch bytes in use, as the last cycle read them, into its
    cell (`scratch_bytes`, None where it has none)."""
    used = ((record.disk or {}) if record is not None else {}).get("scratch_used_bytes", {})
    for cell in cells:
        machine = cell.get("machine")
        cell["scratch_bytes"] = used.get(machine) if cell.get("state") == "running" and \
            machine else None
