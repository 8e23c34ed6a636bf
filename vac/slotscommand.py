# SPDX-License-Identifier: BSD-2-Clause
"""`vac slots`: vacd's own state, one row per slot, and totals, as text or versioned JSON.

The first line says whether vacd runs (the holder of vacd.lock in the state directory) and
when its last cycle was, and the configuration's state. When the configuration cannot be
loaded, the state directory is found as vacd finds it and the slots it knows are shown
anyway, with the rejection on the first line (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from vac import fsutil, planfile
from vac.config.forcommand import load_for_command
from vac.config.load import config_files
from vac.config.model import Config
from vac.errors import ConfigError, ConfigMissing
from vac.paths import Paths
from vac.service import lock
from vac.slotview import (age_text, cycle_summary, image_notes, local_time, names_on_disk,
                          rows_at, slot_rows)

JSON_VERSION = 2   # version 1: the unversioned {"slots", "cycle", "images"} of before
# The states a slot can be in, in the order totals show them; --state takes them lower-case.
STATES = ("Running", "Starting", "Failed", "Shut down", "Idle", "Paused", "Zombie", "Unknown")
STATE_CHOICES = ("running", "starting", "failed", "shutdown", "idle")
COLUMNS = (("SLOT", "name"), ("MACHINETYPE", "machinetype"), ("STATE", "state"),
           ("CPUS", "processors"), ("AGE", "age"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `slots` subparser's flags (vac.1 documents each)."""
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--totals", action="store_true",
                        help="print vacd's line and the totals only")
    parser.add_argument("--machinetype", action="append", metavar="NAME",
                        help="only the slots of this machinetype (repeatable)")
    parser.add_argument("--state", action="append", choices=STATE_CHOICES,
                        help="only the slots in this state (repeatable)")


def slots_command(args: argparse.Namespace, now: Optional[float] = None) -> int:
    now = time.time() if now is None else now
    view, rejected = build_view(args.config, now)
    rows = select(view.pop("all_slots"), args.machinetype, args.state)
    view["totals"] = totals(rows)
    if not args.totals:
        view["slots"] = rows
    if args.json:
        print(json.dumps(view, indent=1, allow_nan=False))
    else:
        print("\n".join(render_text(view, now)))
    return 1 if rejected else 0


def build_view(explicit: Optional[Sequence[str]], now: float) -> Tuple[Dict[str, Any], bool]:
    """The whole view as data, and whether the configuration is rejected (or missing)."""
    files = config_files(explicit)
    config, state, error = _load(explicit, now)
    paths = config.settings.paths if config is not None else _state_dir(files)
    if paths is None:    # a --config file that is not there: no state directory to show
        return {"version": JSON_VERSION, "time": int(now),
                "vacd": vacd_status(None, now, state, error, None), "all_slots": [],
                "cycle": cycle_summary(None, None), "images": []}, True
    record = planfile.read(paths.plan)
    if config is not None:
        rows = slot_rows(config, now)
    else:
        rows = rows_at(paths, names_on_disk(paths, record), now, record)
    view = {"version": JSON_VERSION, "time": int(now),
            "vacd": vacd_status(paths, now, state, error, record),
            "all_slots": rows, "cycle": cycle_summary(paths, record),
            "images": image_notes(config, now) if config is not None else []}
    return view, config is None


def _load(explicit: Optional[Sequence[str]],
          now: float) -> Tuple[Optional[Config], str, Optional[str]]:
    """(config or None, its state: ok / rejected / missing, the reason)."""
    try:
        config = load_for_command(explicit, now)
    except ConfigMissing as e:
        return None, planfile.CONFIG_MISSING, str(e)
    except ConfigError as e:
        return None, planfile.CONFIG_REJECTED_STATE, str(e)
    return config, planfile.CONFIG_OK, None


def _state_dir(files: List[str]) -> Optional[Paths]:
    """The state directory vacd would use with these files; None for a missing --config."""
    try:
        return Paths(lock.state_dir_of(files))
    except ConfigMissing:
        return None


def vacd_status(paths: Optional[Paths], now: float, config_state: str,
                config_error: Optional[str],
                record: Optional[planfile.PlanRecord]) -> Dict[str, Any]:
    """vacd as data: running (the lock's holder), its pid, its last cycle, the config;
    running None when no state directory is known."""
    holder = lock.is_held(paths.state_dir) if paths is not None else None
    last = _last_cycle(paths, record) if paths is not None else None
    status = {"running": holder is not None if paths is not None else None,
              "pid": holder if holder and holder > 0 else None,
              "state_dir": paths.state_dir if paths is not None else None, "last_cycle": last,
              "last_cycle_age": max(0, int(now - last)) if last is not None else None,
              "config_state": config_state, "config_error": config_error,
              "vacd_config_state": record.config_state if record is not None else None,
              "vacd_config_error": record.config_error if record is not None else None}
    status["text"] = vacd_line(status, now)
    return status


def _last_cycle(paths: Paths, record: Optional[planfile.PlanRecord]) -> Optional[int]:
    """When vacd last wrote its heartbeat or its plan record (a cycle or a refill)."""
    times = [fsutil.mtime_or_none(paths.factory_heartbeat)]
    times.append(record.time if record is not None else None)
    known = [t for t in times if t is not None]
    return int(max(known)) if known else None


def vacd_line(status: Dict[str, Any], now: float) -> str:
    """The first line: vacd running or not, its last cycle, the configuration's state."""
    last = status["last_cycle"]
    when = f"{local_time(last, now)}, {age_text(now - last)} ago" if last is not None else ""
    if status["running"]:
        pid = f"pid {status['pid']}" if status["pid"] else "pid unknown"
        text = f"vacd running ({pid}), " + (f"last cycle {when}" if last is not None
                                             else "no cycle yet")
    elif status["state_dir"] is None:
        text = "vacd: no state directory known"
    elif last is not None:
        text = f"vacd not running: stopped after its last cycle ({when})"
    else:
        text = f"vacd not running: no cycle has run on {status['state_dir']}"
    return f"{text}; {_config_text(status)}"


def _config_text(status: Dict[str, Any]) -> str:
    if status["config_state"] == planfile.CONFIG_MISSING:
        return f"configuration missing: {status['config_error']}"
    if status["config_state"] != planfile.CONFIG_OK:
        return f"configuration rejected: {status['config_error']}"
    if status["vacd_config_state"] not in (None, planfile.CONFIG_OK):
        return ("configuration OK (vacd's last cycle found it rejected: "
                f"{status['vacd_config_error']})")
    return "configuration OK"


def select(rows: List[Dict], machinetypes: Optional[List[str]],
           states: Optional[List[str]]) -> List[Dict]:
    """The rows of the given machinetypes and states (all when none are given)."""
    return [r for r in rows
            if (not machinetypes or r["machinetype"] in machinetypes)
            and (not states or r["state"].lower().replace(" ", "") in states)]


def totals(rows: List[Dict]) -> List[Dict]:
    """Slots and processors per (machinetype, state); machinetype None for idle slots."""
    found: Dict[Tuple[str, str], Dict] = {}
    for row in rows:
        key = (row["machinetype"] or "", row["state"])
        entry = found.setdefault(key, {"machinetype": row["machinetype"], "state": row["state"],
                                       "slots": 0, "processors": 0})
        entry["slots"] += 1
        entry["processors"] += row["processors"]
    return [found[k] for k in sorted(found, key=lambda k: (k[0] == "", k[0], _order(k[1])))]


def _order(state: str) -> int:
    return STATES.index(state) if state in STATES else len(STATES)


def render_text(view: Dict[str, Any], now: float) -> List[str]:
    """The text view: vacd's line, a header and one line per slot, the totals, the notes."""
    lines = [view["vacd"]["text"]]
    if "slots" in view:
        lines += [""] + _table(view["slots"])
    if view["totals"]:
        lines += [""] + _totals_table(view["totals"])
    elif "slots" not in view:
        lines += ["", "no slots"]
    if "slots" in view:
        lines += [note["text"] for note in view["images"]]
        if view["cycle"]["errors"]:
            lines.append(f"last cycle: {view['cycle']['errors']} errors; see the vacd log")
    return lines


def _table(rows: List[Dict]) -> List[str]:
    if not rows:
        return ["no slots"]
    cells = [[h for h, _ in COLUMNS] + ["DETAIL"]]
    cells += [[_cell(row, key) for _, key in COLUMNS] + [_detail(row)] for row in rows]
    return _aligned(cells, right=(3, 4))


def _cell(row: Dict, key: str) -> str:
    value = row[key]
    if key == "age":
        return age_text(value) if value is not None else "-"
    return "-" if value is None else str(value)


def _detail(row: Dict) -> str:
    if not row["errors"]:
        return row["detail"]
    count = f"{row['errors']} error{'s' if row['errors'] != 1 else ''}"
    if row["last_error"] and row["last_error"] not in row["detail"]:
        return f"{row['detail']}  [{count}, last: {row['last_error']}]"
    return f"{row['detail']}  [{count}]"


def _totals_table(entries: List[Dict]) -> List[str]:
    states = sorted({e["state"] for e in entries}, key=_order)
    counts: Dict[str, Dict[str, int]] = {}
    for entry in entries:
        counts.setdefault(entry["machinetype"] or "-", {})[entry["state"]] = entry["slots"]
    cells = [["TOTALS"] + list(states) + ["Total"]]
    for machinetype, by_state in counts.items():
        cells.append([machinetype] + [str(by_state.get(s, 0)) for s in states]
                     + [str(sum(by_state.values()))])
    column = [sum(c.get(s, 0) for c in counts.values()) for s in states]
    cells.append(["Total"] + [str(n) for n in column] + [str(sum(column))])
    return _aligned(cells, right=tuple(range(1, len(states) + 2)))


def _aligned(cells: List[List[str]], right: Tuple[int, ...]) -> List[str]:
    """Columns padded to their widest cell (the last one not padded), numbers right."""
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for row in cells:
        parts = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(row)]
        lines.append("  ".join(parts[:-1] + [row[-1] if len(row) - 1 not in right
                                             else parts[-1]]).rstrip())
    return lines
