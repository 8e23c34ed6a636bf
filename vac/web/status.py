# SPDX-License-Identifier: BSD-2-Clause
"""The status page's data: what every slot of this factory is doing, read from disk alone.

One cell per slot (running, starting, idle, or idle in a backoff), with its machine, age,
processors and CPU %, and for an idle slot the planner's reason from the last cycle's
plan.json (with the end of a backoff as a time); cells grouped by superslot; a panel per
machinetype (running, target against actual share here and over the space, the last
outcomes by shutdown code, fizzles, backoff in force); the last finished machines; and a
verdict a person can read from across the room. Nothing here calls a backend or writes.

Everything returned is plain JSON-able data: the JSON API serves it as it is, the pages
render it (escaped). Strings from guests and pipes are passed on untouched, never trusted.
"""
from __future__ import annotations

import json
import math
import re
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from vac import fsutil
from vac.config.model import Config
from vac.cycle.shares import Census, machine_hs06
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.slots import make_slots
from vac.space.census import others as census_others
from vac.space.messages import two_decimals
from vac.web import outcomes

BACKOFF_RE = re.compile(r"backoff of (\S+) until (\d+)")
FINISHED_SHOWN = 20
PLAN_LIMIT = 16 * 1024 * 1024
WARNINGS_SHOWN = 50
WARNING_LIMIT = 1000
MARKERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
STALE_CYCLES = 3        # no cycle for this many cycle_seconds (at least 3 min): not healthy


class SpaceView:
    """What vacd's own space poll saw last (in memory): the other factories' census by
    machinetype, the silent factories, when. Empty when vacd polls no other factory."""

    def __init__(self, census: Optional[Mapping[str, Census]] = None,
                 silent: Optional[List[str]] = None, polled: Optional[float] = None):
        self.census = dict(census or {})
        self.silent = list(silent or [])
        self.polled = polled

    @classmethod
    def of(cls, poll: Any) -> SpaceView:
        """The view of a vac.space.census.SpacePoll (or of nothing)."""
        if poll is None:
            return cls()
        return cls(getattr(poll, "census", {}), getattr(poll, "silent", []),
                   getattr(poll, "polled", None))


def read_plan(config: Config) -> Dict[str, Any]:
    """The last cycle's plan.json (idle reasons, errors), {} if none or unreadable."""
    text = fsutil.read_optional(config.settings.paths.plan, PLAN_LIMIT)
    try:
        plan = json.loads(text) if text else {}
    except ValueError:
        return {}
    return plan if isinstance(plan, dict) else {}


def backoff_ends(reason: str, now: float) -> Dict[str, int]:
    """machinetype -> end time of each backoff named in an idle reason still in force."""
    return {mt: int(until) for mt, until in BACKOFF_RE.findall(reason) if int(until) >= now}


def markers(config: Config) -> Dict[str, str]:
    """A one-letter marker per configured machinetype, in name order (legend and cells)."""
    names = sorted(config.machinetypes)
    return {name: (MARKERS[i] if i < len(MARKERS) else str(i + 1)) for i, name in
            enumerate(names)}


def slot_cells(config: Config, plan: Mapping[str, Any], now: float) -> List[Dict[str, Any]]:
    """One cell per slot, in slot order."""
    letters = markers(config)
    s = config.settings
    return [slot_cell(config, plan, slot.ordinal, slot.name, letters, now)
            for slot in make_slots(s.factory_name, s.host_processors)]


def slot_cell(config: Config, plan: Mapping[str, Any], ordinal: int, name: str,
              letters: Mapping[str, str], now: float) -> Dict[str, Any]:
    """One slot's cell: its machine, or why it is idle."""
    paths = config.settings.paths
    idle = plan.get("idle") if isinstance(plan.get("idle"), dict) else {}
    errors = plan.get("machine_errors") if isinstance(plan.get("machine_errors"), dict) else {}
    record = read_slot_record(paths, name)
    directory = MachineDir.for_record(paths, name, record)
    cell = _cell(ordinal, name, directory, record.model if record else None, now)
    if cell["state"] == "idle":
        cell["reason"] = _idle_reason(idle.get(name), plan)
        ends = backoff_ends(cell["reason"], now)
        if ends:
            cell["state"] = "backoff"
            cell["backoff_until"] = max(ends.values())
    failures = errors.get(name) if isinstance(errors.get(name), dict) else {}
    if directory is not None and failures.get("machine") == cell["machine"]:
        cell["errors"] = int(failures.get("count") or 0)
        cell["last_error"] = failures.get("last")
    cell["marker"] = letters.get(cell["machinetype"] or "", "?" if cell["machinetype"] else "")
    return cell


def _idle_reason(reason: Any, plan: Mapping[str, Any]) -> str:
    if plan.get("config_error"):
        return f"configuration rejected: {plan['config_error']}"
    if isinstance(reason, str) and reason:
        return reason
    return "no cycle has run yet" if not plan else "idle (no reason recorded)"


def _cell(ordinal: int, name: str, directory: Optional[MachineDir], model: Optional[str],
          now: float) -> Dict[str, Any]:
    cell: Dict[str, Any] = {
        "slot": name, "ordinal": ordinal, "state": "idle", "machine": None, "machinetype": None,
        "model": model, "processors": 0, "age_seconds": None, "cpu_seconds": None,
        "cpu_percentage": None, "hs06": None, "shutdown_time": None, "reason": None,
        "backoff_until": None, "last_message": None, "errors": 0, "last_error": None,
        "image_version": None}
    if directory is None:
        return cell
    state = directory.disk_state()
    processors = directory.processors
    cell.update({"machine": directory.path.rsplit("/", 1)[-1],
                 "machinetype": directory.machinetype, "processors": processors,
                 "shutdown_time": directory.shutdown_time,
                 "image_version": image_version(directory)})
    began = directory.started if state is not MachineState.STARTING else None
    began = began or directory.created
    cell["age_seconds"] = max(0, int(now - began)) if began else None
    if state is MachineState.SHUTDOWN:
        cell["last_message"] = directory.shutdown_message
        cell["processors"] = 0
        return cell
    cell["state"] = "running" if state is MachineState.RUNNING else "starting"
    cell["cpu_seconds"], cell["cpu_percentage"] = heartbeat(directory)
    cell["hs06"] = two_decimals(machine_hs06(directory.hs06, processors))
    return cell


def heartbeat(directory: MachineDir) -> Tuple[Optional[float], Optional[float]]:
    """(CPU seconds, CPU %) from the heartbeat file, as the responder reads it."""
    beat = (directory.read("heartbeat", 256) or "").split()
    values: List[Optional[float]] = []
    for word in beat[:2]:
        try:
            number = float(word)
        except ValueError:
            number = None
        values.append(two_decimals(number) if number is not None and math.isfinite(number)
                      else None)
    values += [None] * (2 - len(values))
    return values[0], values[1]


def image_version(directory: MachineDir) -> Optional[str]:
    """backend.json's image_version (the image digest or version it started from), if any."""
    value = directory.read_backend_record().get("image_version")
    return str(value)[:512] if value is not None else None


def superslot_groups(cells: List[Dict[str, Any]], per: int) -> List[Dict[str, Any]]:
    """The cells grouped as the planner groups them: with processors_per_superslot > 1, the
    live machines sharing a shutdown time form one superslot; free slots come last."""
    if per <= 1:
        return [{"label": None, "shutdown_time": None, "cells": cells}]
    groups: Dict[int, List[Dict[str, Any]]] = {}
    rest = []
    for cell in cells:
        if cell["state"] in ("running", "starting") and cell["shutdown_time"] is not None:
            groups.setdefault(cell["shutdown_time"], []).append(cell)
        else:
            rest.append(cell)
    result = [{"label": f"superslot {i + 1}", "shutdown_time": end, "cells": members}
              for i, (end, members) in enumerate(sorted(groups.items()))]
    if rest:
        result.append({"label": "not in a superslot", "shutdown_time": None, "cells": rest})
    return result


def machinetype_panels(config: Config, cells: List[Dict[str, Any]],
                       finished: List[Dict[str, Any]], space: SpaceView,
                       now: float) -> List[Dict[str, Any]]:
    """One panel per configured machinetype."""
    letters = markers(config)
    running: Dict[str, Dict[str, float]] = {}
    for cell in cells:
        if cell["state"] == "running":
            entry = running.setdefault(cell["machinetype"], {"machines": 0, "processors": 0,
                                                             "hs06": 0.0})
            entry["machines"] += 1
            entry["processors"] += cell["processors"]
            entry["hs06"] += float(cell["hs06"] or cell["processors"])
    backoffs = _backoffs_in_force(cells, now)
    targets = {n: max(0.0, mt.target_share) for n, mt in config.machinetypes.items()}
    all_target = sum(targets.values())
    all_running = sum(e["hs06"] for e in running.values())
    # The space: these machines plus the other factories' census of the last poll (none
    # needed in a space of one; unknown before the first poll).
    known = space.polled is not None or not census_others(config.settings)
    remote = {n: c for n, c in space.census.items() if n in targets}
    space_total = all_running + sum(c.running_hs06 for c in remote.values())
    outcome = outcomes.by_machinetype(finished)
    panels = []
    for name in sorted(config.machinetypes):
        mine = running.get(name, {"machines": 0, "processors": 0, "hs06": 0.0})
        seen = outcome.get(name, {"codes": {}, "sequence": [], "fizzles": 0, "seen": 0})
        census = remote.get(name, Census())
        panels.append({
            "machinetype": name, "marker": letters[name], "running": int(mine["machines"]),
            "fqan": config.machinetypes[name].accounting_fqan,
            "processors": int(mine["processors"]),
            "target_share": _ratio(targets[name], all_target),
            "factory_share": _ratio(mine["hs06"], all_running),
            "space_share": _ratio(mine["hs06"] + census.running_hs06, space_total)
            if known else None,
            "space_running": int(mine["machines"]) + census.running_machines if known else None,
            "codes": dict(sorted(seen["codes"].items())), "sequence": seen["sequence"],
            "finished_seen": seen["seen"], "fizzles": seen["fizzles"],
            "backoff_until": backoffs.get(name)})
    return panels


def _ratio(part: float, whole: float) -> Optional[float]:
    return round(part / whole, 4) if whole > 0 else None


def _backoffs_in_force(cells: List[Dict[str, Any]], now: float) -> Dict[str, int]:
    found: Dict[str, int] = {}
    for cell in cells:
        for mt, until in backoff_ends(cell.get("reason") or "", now).items():
            found[mt] = max(found.get(mt, 0), until)
    return found


def idle_reasons(cells: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Why slots are idle: each distinct reason with its slots' ordinals, most slots first."""
    found: Dict[str, List[int]] = {}
    for cell in cells:
        if cell["state"] in ("idle", "backoff"):
            found.setdefault(cell["reason"] or "", []).append(cell["ordinal"])
    return [{"reason": reason, "ordinals": ordinals, "count": len(ordinals)}
            for reason, ordinals in sorted(found.items(), key=lambda i: (-len(i[1]), i[0]))]


def health(config: Config, plan: Mapping[str, Any], cells: List[Dict[str, Any]],
           now: float) -> Dict[str, Any]:
    """The verdict at the top of the page: ok, warning or failing, and why in words."""
    lines = plan.get("errors") if isinstance(plan.get("errors"), list) else []
    cycle = {"time": plan.get("time"), "errors": plan.get("cycle_errors", len(lines)),
             "config_error": plan.get("config_error")}
    problems, warnings = [], []
    stale = max(180.0, STALE_CYCLES * config.settings.cycle_seconds)
    if cycle["config_error"]:
        problems.append("configuration rejected")
    if not plan or not isinstance(cycle["time"], (int, float)):
        warnings.append("no cycle has run yet")
    elif now - cycle["time"] > stale:
        problems.append(f"no cycle for {int(now - cycle['time'])} s")
    if cycle["errors"]:
        warnings.append(f"last cycle: {cycle['errors']} errors")
    if any(c["errors"] for c in cells):
        warnings.append(f"{sum(1 for c in cells if c['errors'])} slots with errors")
    backoff = sum(1 for c in cells if c["state"] == "backoff")
    if backoff:
        warnings.append(f"{backoff} slots idle in a backoff")
    level = "failing" if problems else "warning" if warnings else "ok"
    return {"level": level, "reasons": problems + warnings, "cycle_time": cycle["time"],
            "cycle_errors": cycle["errors"], "config_error": cycle["config_error"],
            "error_lines": [str(line)[:WARNING_LIMIT] for line in lines[:WARNINGS_SHOWN]]}


def factory_view(config: Config, now: Optional[float] = None,
                 space: Optional[SpaceView] = None) -> Dict[str, Any]:
    """Everything the factory page shows (and /api/factory serves)."""
    now = time.time() if now is None else now
    space = space or SpaceView()
    s = config.settings
    plan = read_plan(config)
    cells = slot_cells(config, plan, now)
    finished = outcomes.recent_finished(s.paths, config.machinetypes)
    counts: Dict[str, int] = {"running": 0, "starting": 0, "idle": 0, "backoff": 0}
    for cell in cells:
        counts[cell["state"]] += 1
    return {"factory": s.factory_name, "space": s.vac_space, "time": int(now),
            "health": health(config, plan, cells, now), "counts": counts,
            "slots": cells, "superslot_processors": s.processors_per_superslot,
            "idle_reasons": idle_reasons(cells),
            "groups": superslot_groups(cells, s.processors_per_superslot),
            "markers": markers(config),
            "machinetypes": machinetype_panels(config, cells, finished, space, now),
            "finished": finished[:FINISHED_SHOWN], "space_polled": space.polled,
            "warnings": [str(w)[:WARNING_LIMIT] for w in config.warnings[:WARNINGS_SHOWN]],
            "cycle_seconds": s.cycle_seconds}
