# SPDX-License-Identifier: BSD-2-Clause
"""The recent finished machines of this factory, read from machines/ (no backend): the newest
directories by creation time, their shutdown messages, codes and whether they fizzled.

Only the newest SCAN_LIMIT directory names are looked at, so a factory that keeps thousands of
old machine directories (machines_dir_days) still answers in bounded time.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, Optional

from vac.config.model import MachineType
from vac.errors import StateError
from vac.machine.directory import MachineDir
from vac.machine.outcome import code_label, fizzled, is_abort
from vac.paths import Paths

SCAN_LIMIT = 400        # machine directories read per view, newest first
PER_MACHINETYPE = 30    # outcomes kept per machinetype (the panel's bar and strip)


def ended_at(directory: MachineDir) -> Optional[float]:
    """When a finished machine ended, as far as its directory says: its last heartbeat, else
    its `finished` file."""
    return directory.heartbeat_time or directory.finished


def fizzled_machine(directory: MachineDir, fizzle_seconds: Optional[float]) -> bool:
    """vac.machine.outcome's fizzle rule for a finished machine's directory."""
    return fizzled(directory.started, ended_at(directory), float(fizzle_seconds or 0))


def outcome_class(code: str) -> str:
    """ok (codes below 300), abort (300 and above) or none (no coded message)."""
    if code == "none":
        return "none"
    return "abort" if is_abort(code + " x") else "ok"


def _newest_names(paths: Paths) -> List[str]:
    try:
        names = [n for n in os.listdir(paths.machines) if not n.startswith(".")]
    except OSError:
        return []
    keyed = []
    for name in names:
        head = name.split("_", 1)[0]
        if head.isdigit() and name.count("_") == 2:
            keyed.append((int(head), name))
    keyed.sort(reverse=True)
    return [name for _, name in keyed[:SCAN_LIMIT]]


def finished_machine(directory: MachineDir, fizzle_seconds: Optional[float]) -> Dict[str, Any]:
    """One finished machine as the page and the API show it."""
    message = directory.shutdown_message
    code = code_label(message)
    started = directory.started
    return {"machine": os.path.basename(directory.path), "slot": directory.name,
            "machinetype": directory.machinetype, "created": directory.created,
            "started": started, "finished": directory.finished, "shutdown_message": message,
            "code": code, "outcome": outcome_class(code), "fizzled": fizzled_machine(directory, fizzle_seconds),
            "cpu_seconds": directory.cpu_seconds}


def recent_finished(paths: Paths, machinetypes: Mapping[str, MachineType]) -> List[Dict[str, Any]]:
    """The finished machines among the newest SCAN_LIMIT directories, newest end first."""
    found = []
    for name in _newest_names(paths):
        path = os.path.join(paths.machines, name)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        try:
            directory = MachineDir(path)
        except StateError:      # a stray name is not a machine
            continue
        if directory.finished is None:
            continue
        mt = machinetypes.get(directory.machinetype)
        found.append(finished_machine(directory, mt.fizzle_seconds if mt else None))
    found.sort(key=lambda f: (f["finished"] or 0, f["machine"]), reverse=True)
    return found


def by_machinetype(finished: List[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """machinetype -> {codes: {code: count}, sequence: [outcome classes, oldest first],
    fizzles: count}, over its newest PER_MACHINETYPE finished machines."""
    result: Dict[str, Dict[str, Any]] = {}
    for machine in finished:
        entry = result.setdefault(machine["machinetype"],
                                  {"codes": {}, "sequence": [], "fizzles": 0, "seen": 0})
        if entry["seen"] >= PER_MACHINETYPE:
            continue
        entry["seen"] += 1
        entry["codes"][machine["code"]] = entry["codes"].get(machine["code"], 0) + 1
        entry["sequence"].insert(0, {"code": machine["code"], "outcome": machine["outcome"]})
        entry["fizzles"] += 1 if machine["fizzled"] else 0
    return result
