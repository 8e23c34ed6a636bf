# SPDX-License-Identifier: BSD-2-Clause
"""The rows of `vac slots`: each slot from the state directory alone (no backend calls)."""
from __future__ import annotations

import json
import os
from typing import Dict, List

from vac import fsutil
from vac.config.model import Config
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.slots import make_slots


def slot_rows(config: Config, now: float) -> List[Dict]:
    """name, machinetype, state, processors, age, last outcome or idle reason, per slot."""
    paths = config.settings.paths
    summary = _last_plan(paths.plan)
    idle = summary.get("idle", {})
    errors = summary.get("machine_errors") or {}
    rows = []
    for slot in make_slots(config.settings.factory_name, config.settings.host_processors):
        record = read_slot_record(paths, slot.name)
        directory = MachineDir.for_record(paths, slot.name, record)
        if directory is None:
            rows.append(_row(slot.name, None, MachineState.SHUTDOWN.value, 0, "",
                             _idle_text(idle, slot.name, summary)))
            continue
        failures = errors.get(slot.name) or {}
        if failures.get("machine") != os.path.basename(directory.path):
            failures = {}
        state = directory.disk_state()
        age = _age(now - (directory.started or directory.created))
        if state == MachineState.SHUTDOWN:
            detail = f"last: {directory.shutdown_message or 'no shutdown message'}"
            if slot.name in idle:
                detail += f"; idle: {idle[slot.name]}"
        elif state == MachineState.RUNNING:
            detail = f"cpu {directory.cpu_seconds:.0f}s, ends {_age(directory.shutdown_time - now) if directory.shutdown_time else '?'} from now"  # noqa: E501
        else:
            detail = "creation in progress or failed"
        rows.append(_row(slot.name, directory.machinetype, state.value, directory.processors,
                         age, detail, failures.get("count", 0), failures.get("last")))
    return rows


def cycle_summary(config: Config) -> Dict:
    """The last cycle: when it ran, its error count and error lines, a rejected config."""
    summary = _last_plan(config.settings.paths.plan)
    lines = summary.get("errors") or []
    return {"time": summary.get("time"), "errors": summary.get("cycle_errors", len(lines)),
            "error_lines": lines, "config_error": summary.get("config_error")}


def _row(name, machinetype, state, processors, age, detail, errors=0, last_error=None) -> Dict:
    return {"name": name, "machinetype": machinetype, "state": state,
            "processors": processors, "age": age, "detail": detail, "errors": errors,
            "last_error": last_error}


def _idle_text(idle: Dict[str, str], name: str, summary: Dict) -> str:
    if summary.get("config_error"):
        return f"idle: configuration rejected: {summary['config_error']}"
    if name in idle:
        return f"idle: {idle[name]}"
    return "idle: no cycle has run yet" if not summary else "idle"


def _last_plan(path: str) -> Dict:
    text = fsutil.read_optional(path, 16 * 1024 * 1024)
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return {}


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
