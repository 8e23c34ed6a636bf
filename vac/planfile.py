# SPDX-License-Identifier: BSD-2-Clause
"""The cycle's record on disk: `plan.json`'s one writer and its one reader.

The factory writes a PlanRecord after every cycle and every refill; `vac slots`, the status
page, the metrics endpoint, the per-machine error counts and check-vacd read it back through
`read()`, with one size limit and one set of guards. Idle reasons are data (kind, machinetype,
until, factory) beside their text for people, so no reader parses a sentence.

Version 1 files (written before records were versioned: no "version" key, idle reasons as
plain strings) are read too, each reason with kind "other".
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

from vac import fsutil

VERSION = 2
LIMIT = 16 * 1024 * 1024   # bytes read of plan.json at most

# The kinds of idle reason. Their texts say the same for people.
NOT_CONFIGURED = "not_configured"       # no configuration file yet
CONFIG_REJECTED = "config_rejected"     # the configuration is rejected: nothing is created
NO_MACHINETYPES = "no_machinetypes"     # the configuration names no machinetype
NO_SHARE = "no_share"                   # no machinetype has a target share
BACKOFF = "backoff"                     # a machinetype's backoff after an abort (until, factory)
MIN_WALLCLOCK = "min_wallclock"         # min_wallclock_seconds would end after shutdown_time
SHUTDOWN_TIME = "shutdown_time"         # after the factory's shutdown_time
DRAINING = "draining"
OVERLOAD = "overload"                   # the load average gate
TOTAL_PROCESSORS = "total_processors"   # total_processors in use
MAX_CREATIONS = "max_creations"         # max_creations_per_cycle reached
NO_ROOM = "no_room"                     # no eligible machinetype fits the processors left
BACKEND_WAITING = "backend_waiting"     # the machinetype's backend is unavailable
YIELDING = "yielding"                   # opportunistic mode: creation paused (until)
SAME_SECOND = "same_second"             # the previous machine ended within its first second
CREATION_FAILED = "creation_failed"     # the creation in this slot failed (machinetype)
DEFERRED = "deferred"                   # creation left for a later cycle (machinetype)
PRESSURE = "pressure"                   # host pressure (PSI) above a threshold (resource, value)
DISK = "disk"                           # too little free disk space (resource: path, value: bytes)
OTHER = "other"

KINDS = (NOT_CONFIGURED, CONFIG_REJECTED, NO_MACHINETYPES, NO_SHARE, BACKOFF, MIN_WALLCLOCK,
         SHUTDOWN_TIME, DRAINING, OVERLOAD, TOTAL_PROCESSORS, MAX_CREATIONS, NO_ROOM,
         BACKEND_WAITING, YIELDING, SAME_SECOND, CREATION_FAILED, DEFERRED, PRESSURE, DISK,
         OTHER)

# The configuration's states.
CONFIG_OK, CONFIG_REJECTED_STATE, CONFIG_MISSING = "ok", "rejected", "missing"


@dataclass(frozen=True)
class IdleReason:
    """Why a free slot stays empty: a kind from KINDS, its text for people, and what the
    kind needs (the machinetype concerned, the epoch it ends, the factory it comes from; for
    PRESSURE the resource, "cpu", "memory" or "io", and its avg10 in per cent; for DISK the
    path of the filesystem short of space and its free bytes). `resource`
    and `value` are written only when set, so records of other kinds keep their shape."""

    kind: str
    text: str
    machinetype: Optional[str] = None
    until: Optional[float] = None
    factory: Optional[str] = None
    parts: Tuple[IdleReason, ...] = ()   # when several machinetypes each have a reason
    resource: Optional[str] = None
    value: Optional[float] = None

    def each(self) -> Tuple[IdleReason, ...]:
        """The single reasons this one stands for: its parts, or itself."""
        return self.parts or (self,)

    def to_json(self) -> Dict[str, Any]:
        data = asdict(self)
        data["parts"] = [p.to_json() for p in self.parts]
        for key in ("resource", "value"):
            if data[key] is None:
                del data[key]
        return data

    @classmethod
    def from_json(cls, value: Any) -> Optional[IdleReason]:
        if isinstance(value, str):   # a version 1 file
            return cls(OTHER, value[:2000])
        if not isinstance(value, dict) or not isinstance(value.get("text"), str):
            return None
        kind = value.get("kind")
        parts = value.get("parts") if isinstance(value.get("parts"), list) else []
        return cls(kind if kind in KINDS else OTHER, value["text"][:2000],
                   _str_or_none(value.get("machinetype")), _epoch_or_none(value.get("until")),
                   _str_or_none(value.get("factory")),
                   tuple(p for p in (cls.from_json(v) for v in parts[:100] if isinstance(v, dict))
                         if p is not None),
                   _str_or_none(value.get("resource")), _epoch_or_none(value.get("value")))


@dataclass(frozen=True)
class PlanRecord:
    """What the last cycle (or refill) decided and met, as every reader sees it.

    counts: the /var/lib/vac/counts values (running machines, slots, running processors,
    total processors, running HS06) after the cycle's destroys and before its creations, as
    the original wrote them. machine_errors: slot -> {"machine", "count", "last"}.
    unmanaged: slot -> why its machine was left alone (its backend unavailable, or it could
    not be observed); a tuple of slot names is accepted too.
    """

    time: float
    idle: Mapping[str, IdleReason] = field(default_factory=dict)
    config_state: str = CONFIG_OK
    config_error: Optional[str] = None
    errors: Tuple[str, ...] = ()
    machine_errors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    unmanaged: Mapping[str, str] = field(default_factory=dict)
    counts: Optional[Tuple[int, int, int, int, float]] = None
    notes: Tuple[str, ...] = ()
    version: int = VERSION
    pressure: Optional[Mapping[str, Any]] = None   # the host's PSI (vac.host.pressure.as_dict)
    disk: Optional[Mapping[str, Any]] = None       # the host's disk (vac.cycle.diskgate.as_dict)

    def idle_texts(self) -> Dict[str, str]:
        return {slot: reason.text for slot, reason in self.idle.items()}

    def to_json(self) -> Dict[str, Any]:
        return {"version": self.version, "time": int(self.time),
                "idle": {k: v.to_json() for k, v in sorted(self.idle.items())},
                "config_state": self.config_state, "config_error": self.config_error,
                "errors": list(self.errors), "cycle_errors": len(self.errors),
                "machine_errors": dict(self.machine_errors),
                "unmanaged": dict(self.unmanaged) if isinstance(self.unmanaged, Mapping)
                else {str(u): "" for u in self.unmanaged},
                "counts": list(self.counts) if self.counts is not None else None,
                "notes": list(self.notes), "pressure": self.pressure, "disk": self.disk}


def write(path: str, record: PlanRecord) -> None:
    """The one writer of plan.json (atomic)."""
    fsutil.atomic_write(path, json.dumps(record.to_json(), sort_keys=True, indent=1,
                                         allow_nan=False))


def read(path: str) -> Optional[PlanRecord]:
    """The one reader: the record, or None if plan.json is absent, too large or malformed."""
    text = fsutil.read_optional(path, LIMIT)
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("time"), (int, float)):
        return None
    return _record(data)


def _record(data: Dict[str, Any]) -> PlanRecord:
    idle_in = data.get("idle") if isinstance(data.get("idle"), dict) else {}
    idle = {str(k): r for k, r in ((k, IdleReason.from_json(v)) for k, v in idle_in.items())
            if r is not None}
    errors = data.get("errors") if isinstance(data.get("errors"), list) else []
    counts = data.get("counts")
    state = data.get("config_state")
    if state not in (CONFIG_OK, CONFIG_REJECTED_STATE, CONFIG_MISSING):
        state = CONFIG_REJECTED_STATE if data.get("config_error") else CONFIG_OK
    return PlanRecord(
        time=float(data["time"]), idle=idle, config_state=state,
        config_error=_str_or_none(data.get("config_error")),
        errors=tuple(str(e)[:2000] for e in errors[:1000]),
        machine_errors=_machine_errors(data.get("machine_errors")),
        unmanaged=_unmanaged(data.get("unmanaged")),
        counts=_counts(counts), notes=tuple(str(n) for n in data.get("notes") or ()
                                            if isinstance(n, str))[:1000],
        version=data.get("version") if isinstance(data.get("version"), int) else 1,
        pressure=_pressure(data.get("pressure")), disk=_disk(data.get("disk")))


def _machine_errors(value: Any) -> Dict[str, Dict[str, Any]]:
    if not isinstance(value, dict):
        return {}
    return {str(slot): entry for slot, entry in value.items()
            if isinstance(entry, dict) and isinstance(entry.get("count"), int)
            and isinstance(entry.get("machine"), str)}


def _unmanaged(value: Any) -> Dict[str, str]:
    """slot -> why (a list of slot names in records written before the reasons were kept)."""
    if isinstance(value, dict):
        return {str(k)[:2000]: v[:2000] if isinstance(v, str) else ""
                for k, v in list(value.items())[:1000]}
    if isinstance(value, list):
        return {u[:2000]: "" for u in value[:1000] if isinstance(u, str)}
    return {}


def _counts(value: Any) -> Optional[Tuple[int, int, int, int, float]]:
    if not isinstance(value, list) or len(value) != 5:
        return None
    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value):
        return None
    return (int(value[0]), int(value[1]), int(value[2]), int(value[3]), float(value[4]))


def _pressure(value: Any) -> Optional[Dict[str, Any]]:
    """The host's pressure as written: resource -> line -> finite numbers (or None)."""
    if not isinstance(value, dict):
        return None
    found: Dict[str, Any] = {k: _epoch_or_none(value.get(k)) for k in ("time", "interval")}
    for resource in ("cpu", "memory", "io"):
        lines = value.get(resource)
        if isinstance(lines, dict):
            found[resource] = {which: {k: _epoch_or_none(v) for k, v in list(fields.items())[:8]
                                       if k in _PRESSURE_FIELDS}
                               for which, fields in lines.items()
                               if which in ("some", "full") and isinstance(fields, dict)}
    return found


_PRESSURE_FIELDS = ("avg10", "avg60", "avg300", "total_seconds", "stall_seconds")


def _disk(value: Any) -> Optional[Dict[str, Any]]:
    """The host's disk as written: filesystems with whole byte counts, the scratch's."""
    if not isinstance(value, dict) or not isinstance(value.get("filesystems"), list):
        return None
    filesystems = []
    for fs in value["filesystems"][:16]:
        if not isinstance(fs, dict) or not isinstance(fs.get("path"), str):
            continue
        entry: Dict[str, Any] = {k: _bytes(fs.get(k)) for k in _DISK_FIELDS}
        entry.update(path=fs["path"][:4096], scratch=fs.get("scratch") is True,
                     holds=[h for h in fs.get("holds") or () if isinstance(h, str)][:8])
        filesystems.append(entry)
    used = value.get("scratch_used_bytes") if isinstance(value.get("scratch_used_bytes"),
                                                         dict) else {}
    return {"filesystems": filesystems,
            "scratch_growth_bytes": _bytes(value.get("scratch_growth_bytes")),
            "scratch_used_bytes": {str(k)[:256]: v for k, v in list(used.items())[:10000]
                                   if _bytes(v) is not None}}


_DISK_FIELDS = ("free_bytes", "size_bytes", "floor_bytes", "growth_bytes")


def _bytes(value: Any) -> Optional[int]:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 \
        else None


def _str_or_none(value: Any) -> Optional[str]:
    return value[:2000] if isinstance(value, str) else None


def _epoch_or_none(value: Any) -> Optional[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value):
        return float(value)
    return None


def combined(reasons: List[IdleReason]) -> IdleReason:
    """Several reasons as one: the first's kind, every text on one line, each kept in parts."""
    if len(reasons) == 1:
        return reasons[0]
    return IdleReason(reasons[0].kind, "; ".join(r.text for r in reasons),
                      parts=tuple(r for reason in reasons for r in reason.each()))
