# SPDX-License-Identifier: BSD-2-Clause
"""The rows of `vac slots`: each slot from the state directory alone (no backend calls).

A row is data (epochs, seconds, None for none, the idle reason as planfile gives it) beside
`detail`, the line a person reads, with times shown as local times. The rows can be made
with a configuration (its slots) or without one (the slots the state directory knows), so
`vac slots` still shows what runs while the configuration is rejected.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Dict, List, Optional

from vac import fsutil, planfile
from vac.config.model import Config
from vac.host import machinepressure
from vac.machine import scratch
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.slots import make_slots
from vac.paths import Paths

DOCKER = "docker://"
IDLE = "Idle"            # a slot with no machine directory (never used, or expired)
FAILED = "Failed"        # MachineState.FAILED's value (contract item 2)
MAX_SLOTS = 10000        # slot names taken from a state directory at most
_SLOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,252}")


def slot_rows(config: Config, now: float) -> List[Dict]:
    """One row per slot of the configuration (see rows_at)."""
    names = [s.name for s in make_slots(config.settings.factory_name,
                                        config.settings.host_processors)]
    return rows_at(config.settings.paths, names, now)


def rows_at(paths: Paths, names: List[str], now: float,
            record: Optional[planfile.PlanRecord] = None) -> List[Dict]:
    """Rows of the named slots: machinetype, state, processors, age, idle reason, errors."""
    record = record if record is not None else planfile.read(paths.plan)
    return [_slot_row(paths, name, record, now) for name in names]


def names_on_disk(paths: Paths, record: Optional[planfile.PlanRecord]) -> List[str]:
    """The slots a state directory knows without a configuration: slot records and the
    slots the last plan record names, in ordinal order."""
    try:
        found = set(os.listdir(paths.slots)[:MAX_SLOTS])
    except OSError:
        found = set()
    if record is not None:
        found |= set(record.idle) | set(record.machine_errors)
    return sorted((n for n in found if _SLOT_NAME.fullmatch(n)), key=_ordinal_key)[:MAX_SLOTS]


def _ordinal_key(name: str) -> tuple:
    head, _, number = name.split(".")[0].rpartition("-")
    return (head, int(number) if number.isdigit() else -1, name)


def _slot_row(paths: Paths, name: str, record: Optional[planfile.PlanRecord],
              now: float) -> Dict:
    reason = record.idle.get(name) if record is not None else None
    errors = dict(record.machine_errors.get(name) or {}) if record is not None else {}
    slot_record = read_slot_record(paths, name)
    directory = MachineDir.for_record(paths, name, slot_record)
    state = directory.disk_state().value if directory is not None else None
    if state == FAILED or (reason is not None and reason.kind == planfile.CREATION_FAILED
                           and state != MachineState.RUNNING.value):
        return _failed_row(name, directory, reason, errors, now)
    if directory is None:
        never = "never used; " if slot_record is None else ""
        return _row(name, IDLE, reason, detail=never + idle_text(reason, record, now))
    if errors.get("machine") != os.path.basename(directory.path):
        errors = {}
    row = _row(name, state, reason, directory, now, errors)
    row["detail"] = _detail(directory, state, reason, record, now, row)
    return row


def _failed_row(name: str, directory: Optional[MachineDir],
                reason: Optional[planfile.IdleReason], errors: Dict, now: float) -> Dict:
    """The reason: the plan's (CREATION_FAILED), else the machine's shutdown_message (vacd
    writes "700 Vac: creation failed: ..."), else the slot's last error; then why the slot
    is idle now if that is something else (a backoff that followed, a deferral)."""
    failed_here = reason is not None and reason.kind == planfile.CREATION_FAILED
    message = directory.shutdown_message if directory is not None else None
    why = reason.text if failed_here else message or errors.get("last") or "creation failed"
    row = _row(name, FAILED, reason, directory, now, errors)
    if row["machinetype"] is None and reason is not None:
        row["machinetype"] = reason.machinetype
    row["last"] = message
    row["detail"] = f"Failed: {why}"
    if reason is not None and not failed_here:
        row["detail"] += f"; idle: {reason_text(reason, now)}"
    return row


def _row(name: str, state: str, reason: Optional[planfile.IdleReason],
         directory: Optional[MachineDir] = None, now: float = 0.0,
         errors: Optional[Dict] = None, detail: str = "") -> Dict:
    errors = errors or {}
    row: Dict[str, Any] = {
        "name": name, "machinetype": None, "state": state, "processors": 0, "machine": None,
        "created": None, "started": None, "age": None, "ends": None, "cpu_seconds": None,
        "last": None, "detail": detail, "errors": int(errors.get("count") or 0),
        "last_error": errors.get("last") or None,
        "idle": reason.to_json() if reason is not None else None,
        "image": None, "image_version": None, "ip": None, "scratch_bytes": None,
        "scratch_limit_bytes": None, "pressure": None}
    if directory is None:
        return row
    started = directory.started
    row.update({"machinetype": directory.machinetype, "processors": directory.processors,
                "machine": os.path.basename(directory.path), "created": directory.created,
                "started": started, "ends": directory.shutdown_time,
                "age": max(0, int(now - (started or directory.created)))})
    image, version, ip = _recorded(directory)
    row.update({"image": image, "image_version": version, "ip": ip})
    return row


def _detail(directory: MachineDir, state: str, reason: Optional[planfile.IdleReason],
            record: Optional[planfile.PlanRecord], now: float, row: Dict) -> str:
    if state == MachineState.SHUTDOWN.value:
        row["last"] = directory.shutdown_message
        detail = f"last: {directory.shutdown_message or 'no shutdown message'}"
        if reason is not None:
            detail += f"; {idle_text(reason, record, now)}"
    elif state == MachineState.RUNNING.value:
        row["cpu_seconds"] = directory.cpu_seconds
        ends = directory.shutdown_time
        when = f"ends {local_time(ends, now)} ({age_text(ends - now)} from now)" \
            if ends else "no shutdown time"
        detail = f"cpu {directory.cpu_seconds:.0f}s, {when}" + _scratch(directory, row)
        row["pressure"] = machinepressure.parse_record(
            directory.read(machinepressure.RECORD, machinepressure.RECORD_LIMIT))
        if row["pressure"] is not None:
            detail += ", " + machinepressure.summary(row["pressure"])
    else:
        detail = "creation in progress"
    if row["ip"]:
        detail += f", ip {row['ip']}"
    if row["image_version"]:
        detail += f", image {short_version(row['image_version'])}"
    return detail


def _scratch(directory: MachineDir, row: Dict) -> str:
    """A running machine's scratch (a container's /scratch, a VM's scratch disk file): used
    (as its last heartbeat says) and limit bytes into the row, and ', scratch U of L GB' for
    the detail; '' when it has none (or, a VM's on an LV, none measured)."""
    used = directory.scratch_bytes
    limit = _int(directory.read(scratch.MJF_KEY, 64))
    if used is None or limit is None:
        return ""
    row.update({"scratch_bytes": used, "scratch_limit_bytes": limit})
    return f", scratch {used / 1e9:.1f} of {limit / 1e9:.1f} GB"


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int((text or "").strip())
    except ValueError:
        return None


def idle_text(reason: Optional[planfile.IdleReason], record: Optional[planfile.PlanRecord],
              now: float) -> str:
    """'idle: <why>' for a person, times as local times."""
    if reason is not None:
        return f"idle: {reason_text(reason, now)}"
    if record is None:
        return "idle: no cycle has run yet"
    if record.config_error:
        return f"idle: configuration rejected: {record.config_error}"
    return "idle: not in vacd's last plan"


def reason_text(reason: planfile.IdleReason, now: float) -> str:
    """An idle reason's text, rebuilt from its data where it holds an epoch (backoff)."""
    if reason.parts:
        return "; ".join(reason_text(part, now) for part in reason.parts)
    if reason.kind == planfile.BACKOFF and reason.until is not None and reason.machinetype:
        text = f"backoff of {reason.machinetype} until {local_time(reason.until, now)}"
        return text + (f" (abort on {reason.factory})" if reason.factory else "")
    return reason.text


def local_time(when: float, now: float) -> str:
    """An epoch as local time: HH:MM:SS on the same day as now, else with the date too."""
    try:
        shown, today = time.localtime(when), time.localtime(now)
    except (OverflowError, OSError, ValueError):
        return "?"
    form = "%H:%M:%S" if shown[:3] == today[:3] else "%Y-%m-%d %H:%M:%S"
    return time.strftime(form, shown)


def _recorded(directory: MachineDir) -> tuple:
    """(image, image_version, ip) the machine's backend recorded (None where it recorded
    none: ip only for a container with its slot's own address on a docker_network)."""
    record = directory.read_backend_record()
    return tuple(_printable(record.get(key)) or None for key in ("image", "image_version", "ip"))


def _printable(value: Any, limit: int = 300) -> str:
    """A recorded value as one bounded line of printable text ('' if not a string)."""
    if not isinstance(value, str):
        return ""
    return "".join(c for c in value if c.isprintable())[:limit]


def short_version(version: str) -> str:
    """An image version for the text view: sha256 digests cut to 12 hex digits."""
    return re.sub(r"sha256:([0-9a-f]{12})[0-9a-f]{52}", r"sha256:\1", version)


def image_notes(config: Config, now: Optional[float] = None) -> List[Dict]:
    """The Docker tags vacd refreshes from registries (docker-images.json): per tag its last
    good version, when it was refreshed, and the registry failure that keeps it, if any.
    Only tags of machinetypes configured with docker_pull_seconds (the file may be older)."""
    text = fsutil.read_optional(config.settings.paths.docker_images, 4 * 1024 * 1024)
    try:
        images = (json.loads(text) if text else {}).get("images") or {}
    except (ValueError, AttributeError):
        return []
    if not isinstance(images, dict):
        return []
    wanted = {mt.root_image[len(DOCKER):] for mt in config.machinetypes.values()
              if mt.docker_pull_seconds is not None and (mt.root_image or "").startswith(DOCKER)}
    return [_note(tag, entry, time.time() if now is None else now)
            for tag, entry in sorted(images.items())
            if tag in wanted and isinstance(entry, dict)]


def _note(tag: str, entry: Dict, now: float) -> Dict:
    version = _printable(entry.get("image_version"))
    error = _printable(entry.get("error"), 1000)
    since = entry.get("failing_since")
    checked = entry.get("checked")
    if error:
        ago = age_text(now - since) if isinstance(since, (int, float)) else "?"
        text = (f"image {_printable(tag)}: registry failing for {ago} ({error}); new machines "
                f"keep {short_version(version) or 'no image yet'}")
    else:
        when = f"refreshed {age_text(now - checked)} ago" if isinstance(checked, (int, float)) \
            else "not refreshed yet"
        text = f"image {_printable(tag)}: {short_version(version)} ({when})"
    return {"image": _printable(tag), "image_version": version, "error": error,
            "failing_since": since, "checked": checked, "text": text,
            "machinetypes": [_printable(m) for m in entry.get("machinetypes") or []
                             if isinstance(m, str)]}


def cycle_summary(config_or_paths: Any,
                  record: Optional[planfile.PlanRecord] = None) -> Dict:
    """The last cycle: when it ran, its error count and error lines, a rejected config, and
    the host's pressure it decided on (`pressure`, only when the host has PSI) and its disk
    reading (`disk`, when it took one: vac.cycle.diskgate.as_dict)."""
    paths = config_or_paths.settings.paths if isinstance(config_or_paths, Config) \
        else config_or_paths
    if record is None and paths is not None:
        record = planfile.read(paths.plan)
    if record is None:
        return {"time": None, "errors": 0, "error_lines": [], "config_error": None}
    summary = {"time": int(record.time), "errors": len(record.errors),
               "error_lines": list(record.errors), "config_error": record.config_error}
    if record.pressure is not None:
        summary["pressure"] = record.pressure
    if record.disk is not None:
        summary["disk"] = record.disk
    return summary


def age_text(seconds: float) -> str:
    """A duration for people: 4m05s, 3h07m, 2d05h."""
    seconds = max(0, int(seconds))
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"
    return f"{seconds // 86400}d{(seconds % 86400) // 3600:02d}h"
