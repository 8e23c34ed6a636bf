# SPDX-License-Identifier: BSD-2-Clause
"""Each machine's own pressure (PSI): read from its cgroup on cgroup v2, kept in a small record
in its machine directory, read back by `vac slots`, the status page and the metrics.

A backend names the cgroup that holds everything of a machine (Backend.cgroup_path: Docker's
per-machine parent, Apptainer's vac/apptainer-<name>, a VM's machine scope); its cpu.pressure,
memory.pressure and io.pressure in the cgroup2 mount are read each cycle through one
vac.host.pressure.Gauge per machine, so the record has the stall seconds since the last cycle
too. Without a cgroup2 mount holding that cgroup (cgroup v1: no pressure per cgroup), with PSI
off, or where the backend cannot name the cgroup, there is no reading: the record is removed
and every reader shows the pressure as absent (None), never as 0.

The record, pressure.json beside the heartbeat file:

    {"version": 1, "time": T, "interval": S, "cgroup": "/vac/docker-...",
     "cpu": {"some": {"avg10": .., "avg60": .., "avg300": .., "total_seconds": ..,
                      "stall_seconds": ..}, "full": {...}},
     "memory": {...}, "io": {...}}

Only vacd writes it, but it is read as hostile all the same: anything not in this shape (a
field not a finite number >= 0, a resource or line unknown) makes the record absent.
"""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

from vac.host import cgroups, pressure
from vac.host.pressure import Gauge, NoPressure, Reading, Stall

log = logging.getLogger(__name__)

RECORD = "pressure.json"
RECORD_LIMIT = 8192
VERSION = 1
FIELDS = ("avg10", "avg60", "avg300", "total_seconds", "stall_seconds")
SHORT = {"cpu": "cpu", "memory": "mem", "io": "io"}


class MachinePressures:
    """One Gauge per machine: read(key, cgroup path, now) each cycle (the key names the
    machine, e.g. its directory), keep_only(keys) to forget the rest."""

    def __init__(self, hierarchies: Optional[cgroups.Hierarchies] = None,
                 reader: Callable[[Mapping[str, str]], Dict[str, Stall]] = pressure.read):
        self._hierarchies = hierarchies
        self._reader = reader
        self._gauges: Dict[str, Gauge] = {}
        self._problems: Dict[str, str] = {}

    @property
    def hierarchies(self) -> cgroups.Hierarchies:
        if self._hierarchies is None:
            self._hierarchies = cgroups.read_hierarchies()
        return self._hierarchies

    def read(self, key: str, cgroup_path: Optional[str], now: float) -> Optional[Reading]:
        """The machine's pressure now, or None (no cgroup named, no cgroup2 mount holding it,
        PSI off, or unreadable: said once per machine and problem in vacd's log)."""
        directory = pressure.cgroup_dir(cgroup_path, self.hierarchies) if cgroup_path else None
        if directory is None:
            self._gauges.pop(key, None)
            return None
        files = pressure.cgroup_files(directory)
        gauge = self._gauges.get(key)
        if gauge is None or gauge.files != files:
            gauge = self._gauges[key] = Gauge(files, self._reader)
        try:
            reading = gauge.read(now)
        except NoPressure:
            return None
        except ValueError as e:
            if self._problems.get(key) != str(e):
                log.warning("%s: pressure of its cgroup unreadable: %s", key, e)
            self._problems[key] = str(e)
            return None
        self._problems.pop(key, None)
        return reading

    def keep_only(self, keys: Iterable[str]) -> None:
        """Forget the gauges of machines not among `keys` (ended, or not running)."""
        keep = set(keys)
        for key in [k for k in self._gauges if k not in keep]:
            del self._gauges[key]
        for key in [k for k in self._problems if k not in keep]:
            del self._problems[key]


def record_text(reading: Reading, cgroup_path: str) -> str:
    """The record of one reading (pressure.json's text)."""
    data = pressure.as_dict(reading) or {}
    return json.dumps({"version": VERSION, "cgroup": cgroup_path, **data}, sort_keys=True)


def parse_record(text: Optional[str]) -> Optional[Dict[str, Any]]:
    """A record as {"time", "interval", "cgroup", resource: {line: {field: number or None}}},
    or None if absent or not in the record's shape."""
    try:
        data = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        return None
    found: Dict[str, Any] = {"time": _number(data.get("time")),
                             "interval": _number(data.get("interval")),
                             "cgroup": data.get("cgroup") if isinstance(data.get("cgroup"),
                                                                        str) else None}
    if found["time"] is None:
        return None
    for resource in pressure.RESOURCES:
        lines = data.get(resource)
        if not isinstance(lines, dict) or not set(lines) <= set(pressure.LINES) \
                or "some" not in lines:
            return None
        found[resource] = {}
        for which, fields in lines.items():
            parsed = _fields(fields)
            if parsed is None:
                return None
            found[resource][which] = parsed
    return found


def _fields(fields: Any) -> Optional[Dict[str, Optional[float]]]:
    if not isinstance(fields, dict) or not set(fields) <= set(FIELDS):
        return None
    parsed = {key: _number(fields.get(key)) for key in FIELDS}
    if any(parsed[key] is None for key in ("avg10", "avg60", "avg300")) or \
            any(fields.get(k) is not None and parsed[k] is None for k in FIELDS):
        return None
    return parsed


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def summary(record: Optional[Dict[str, Any]]) -> str:
    """'psi some avg10: cpu 1.2% mem 0.0% io 3.4%' for a parsed record; '' for None."""
    if record is None:
        return ""
    words = [f"{SHORT[r]} {record[r]['some']['avg10']:.1f}%" for r in pressure.RESOURCES]
    return "psi some avg10: " + " ".join(words)
