# SPDX-License-Identifier: BSD-2-Clause
"""The status page's data: what every slot of this factory is doing, read from disk alone.

One cell per slot (running, starting, failed, idle, or idle in a backoff), with its machine,
age, processors and CPU %, and for an idle slot the planner's reason from the last record
(vac.planfile.read: the reason as data, so a backoff's machinetype and end are read, not
parsed from its sentence); cells grouped by superslot; a panel per
machinetype (running, target against actual share here and over the space, the last
outcomes by shutdown code, fizzles, backoff in force); the last finished machines; and a
verdict a person can read from across the room (FAILING, with the reason, while the
configuration is rejected or missing). Nothing here calls a backend or writes.

Everything returned is plain JSON-able data: the JSON API serves it as it is, the pages
render it (escaped). Strings from guests and pipes are passed on untouched, never trusted.
"""
from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple

from vac import planfile
from vac.config.model import Config
from vac.host import machinepressure
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.slots import make_slots
from vac.space.census import others as census_others
from vac.space.censusdata import Census, machine_hs06
from vac.space.messages import two_decimals
from vac.web import outcomes, statusdisk
from vac.web.statuspressure import host_pressure

FINISHED_SHOWN = 20
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


def read_plan(config: Config) -> Optional[planfile.PlanRecord]:
    """The last cycle's (or refill's) record, None if there is none or it is unreadable."""
    return planfile.read(config.settings.paths.plan)


def backoff_ends(reason: Optional[planfile.IdleReason], now: float) -> Dict[str, int]:
    """machinetype -> end time of each backoff in an idle reason that is still in force."""
    if reason is None:
        return {}
    return {r.machinetype: int(math.ceil(r.until)) for r in reason.each()
            if r.kind == planfile.BACKOFF and r.machinetype and r.until is not None
            and r.until >= now}


def markers(config: Config) -> Dict[str, str]:
    """A one-letter marker per configured machinetype, in name order (legend and cells)."""
    names = sorted(config.machinetypes)
    return {name: (MARKERS[i] if i < len(MARKERS) else str(i + 1)) for i, name in
            enumerate(names)}


def slot_cells(config: Config, plan: Optional[planfile.PlanRecord],
               now: float) -> List[Dict[str, Any]]:
    """One cell per slot, in slot order."""
    letters = markers(config)
    s = config.settings
    return [slot_cell(config, plan, slot.ordinal, slot.name, letters, now)
            for slot in make_slots(s.factory_name, s.host_processors)]


def slot_cell(config: Config, plan: Optional[planfile.PlanRecord], ordinal: int, name: str,
              letters: Mapping[str, str], now: float) -> Dict[str, Any]:
    """One slot's cell: its machine, or why it is idle (`reason` the text, `idle_reason`
    the data as plan.json has it)."""
    paths = config.settings.paths
    record = read_slot_record(paths, name)
    directory = MachineDir.for_record(paths, name, record)
    cell = _cell(ordinal, name, directory, record.model if record else None, now)
    if cell["state"] in ("idle", "failed"):
        why = _idle_reason(plan.idle.get(name) if plan is not None else None, plan)
        cell["reason"], cell["idle_reason"] = why.text, why.to_json()
        ends = backoff_ends(why, now)
        if ends:
            cell["state"] = "backoff" if cell["state"] == "idle" else cell["state"]
            cell["backoff_until"] = max(ends.values())
    failures = plan.machine_errors.get(name) if plan is not None else None
    if directory is not None and failures and failures.get("machine") == cell["machine"]:
        cell["errors"] = int(failures.get("count") or 0)
        cell["last_error"] = failures.get("last")
    cell["marker"] = letters.get(cell["machinetype"] or "", "?" if cell["machinetype"] else "")
    return cell


def _idle_reason(reason: Optional[planfile.IdleReason],
                 plan: Optional[planfile.PlanRecord]) -> planfile.IdleReason:
    if reason is not None:
        return reason
    if plan is not None and plan.config_state != planfile.CONFIG_OK:
        return _config_reason(plan)
    return planfile.IdleReason(planfile.OTHER, "no cycle has run yet" if plan is None
                               else "idle (no reason recorded)")


def _config_reason(plan: planfile.PlanRecord) -> planfile.IdleReason:
    if plan.config_state == planfile.CONFIG_MISSING:
        return planfile.IdleReason(planfile.NOT_CONFIGURED,
                                   plan.config_error or "not configured yet")
    return planfile.IdleReason(planfile.CONFIG_REJECTED,
                               f"configuration rejected: {plan.config_error}")


def _cell(ordinal: int, name: str, directory: Optional[MachineDir], model: Optional[str],
          now: float) -> Dict[str, Any]:
    cell: Dict[str, Any] = {
        "slot": name, "ordinal": ordinal, "state": "idle", "machine": None, "machinetype": None,
        "model": model, "processors": 0, "age_seconds": None, "cpu_seconds": None,
        "cpu_percentage": None, "hs06": None, "shutdown_time": None, "reason": None,
        "backoff_until": None, "last_message": None, "errors": 0, "last_error": None,
        "image_version": None, "idle_reason": None, "pressure": None}
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
    if state in (MachineState.SHUTDOWN, MachineState.FAILED):
        cell["last_message"] = directory.shutdown_message
        cell["processors"] = 0
        cell["state"] = "failed" if state is MachineState.FAILED else "idle"
        return cell
    cell["state"] = "running" if state is MachineState.RUNNING else "starting"
    cell["cpu_seconds"], cell["cpu_percentage"] = heartbeat(directory)
    cell["hs06"] = two_decimals(machine_hs06(directory.hs06, processors))
    cell["pressure"] = machinepressure.parse_record(
        directory.read(machinepressure.RECORD, machinepressure.RECORD_LIMIT))
    return cell


def heartbeat(directory: MachineDir) -> Tuple[Optional[float], Optional[float]]:
    """(CPU seconds, CPU %) from the heartbeat file, as the responder reads it."""
    cpu, percent = directory.heartbeat_values()
    return two_decimals(cpu), two_decimals(percent)


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
    """machinetype -> the latest end of its backoffs in force that the cells show."""
    found: Dict[str, int] = {}
    for cell in cells:
        why = planfile.IdleReason.from_json(cell.get("idle_reason"))
        for mt, until in backoff_ends(why, now).items():
            found[mt] = max(found.get(mt, 0), until)
    return found


def idle_reasons(cells: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Why slots are idle: each distinct reason with its slots' ordinals, most slots first."""
    found: Dict[str, List[int]] = {}
    for cell in cells:
        if cell["state"] in ("idle", "backoff", "failed"):
            found.setdefault(cell["reason"] or "", []).append(cell["ordinal"])
    return [{"reason": reason, "ordinals": ordinals, "count": len(ordinals)}
            for reason, ordinals in sorted(found.items(), key=lambda i: (-len(i[1]), i[0]))]


def health(config: Config, plan: Optional[planfile.PlanRecord], cells: List[Dict[str, Any]],
           now: float) -> Dict[str, Any]:
    """The verdict at the top of the page: ok, warning or failing, and why in words.

    Failing while the configuration is rejected or missing (with the reason: nothing is
    created), or when no cycle ran for STALE_CYCLES cycles."""
    lines = list(plan.errors) if plan is not None else []
    cycle = {"time": int(plan.time) if plan is not None else None, "errors": len(lines),
             "config_error": plan.config_error if plan is not None else None,
             "config_state": plan.config_state if plan is not None else None}
    problems, warnings = [], []
    stale = max(180.0, STALE_CYCLES * config.settings.cycle_seconds)
    if plan is not None and plan.config_state != planfile.CONFIG_OK:
        problems.append(f"{_config_reason(plan).text}; no machines are created")
    if plan is None:
        warnings.append("no cycle has run yet")
    elif now - plan.time > stale:
        problems.append(f"no cycle for {int(now - plan.time)} s")
    if cycle["errors"]:
        warnings.append(f"last cycle: {cycle['errors']} errors")
    if any(c["errors"] for c in cells):
        warnings.append(f"{sum(1 for c in cells if c['errors'])} slots with errors")
    failed = sum(1 for c in cells if c["state"] == "failed")
    if failed:
        warnings.append(f"{failed} slots whose last creation failed")
    backoff = sum(1 for c in cells if c["state"] == "backoff")
    if backoff:
        warnings.append(f"{backoff} slots idle in a backoff")
    level = "failing" if problems else "warning" if warnings else "ok"
    return {"level": level, "reasons": problems + warnings, "cycle_time": cycle["time"],
            "cycle_errors": cycle["errors"], "config_error": cycle["config_error"],
            "config_state": cycle["config_state"],
            "error_lines": [str(line)[:WARNING_LIMIT] for line in lines[:WARNINGS_SHOWN]]}


def factory_view(config: Config, now: Optional[float] = None,
                 space: Optional[SpaceView] = None) -> Dict[str, Any]:
    """Everything the factory page shows (and /api/factory serves)."""
    now = time.time() if now is None else now
    space = space or SpaceView()
    s = config.settings
    plan = read_plan(config)
    cells = slot_cells(config, plan, now)
    statusdisk.add_scratch(cells, plan)
    finished = outcomes.recent_finished(s.paths, config.machinetypes)
    counts: Dict[str, int] = {"running": 0, "starting": 0, "idle": 0, "backoff": 0,
                              "failed": 0}
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
            "cycle_seconds": s.cycle_seconds, "pressure": host_pressure(plan, s),
            "disk": statusdisk.host_disk(plan)}
