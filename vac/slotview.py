# SPDX-License-Identifier: BSD-2-Clause
"""The rows of `vac slots`: each slot from the state directory alone (no backend calls)."""
from __future__ import annotations

import json
import os
import re
import time
from typing import Any, Dict, List, Optional

from vac import fsutil
from vac.config.model import Config
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.slots import make_slots

DOCKER = "docker://"


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
        image, version, ip = _recorded(directory)
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
        if ip:
            detail += f", ip {ip}"
        if version:
            detail += f", image {short_version(version)}"
        row = _row(slot.name, directory.machinetype, state.value, directory.processors,
                   age, detail, failures.get("count", 0), failures.get("last"))
        row.update({"image": image, "image_version": version, "ip": ip})
        rows.append(row)
    return rows


def _recorded(directory: MachineDir) -> tuple:
    """(image, image_version, ip) the machine's backend recorded ('' where it recorded none:
    ip only for a container with its slot's own address on a docker_network)."""
    record = directory.read_backend_record()
    return tuple(_printable(record.get(key)) for key in ("image", "image_version", "ip"))


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
        ago = _age(now - since) if isinstance(since, (int, float)) else "?"
        text = (f"image {_printable(tag)}: registry failing for {ago} ({error}); new machines "
                f"keep {short_version(version) or 'no image yet'}")
    else:
        when = f"refreshed {_age(now - checked)} ago" if isinstance(checked, (int, float)) \
            else "not refreshed yet"
        text = f"image {_printable(tag)}: {short_version(version)} ({when})"
    return {"image": _printable(tag), "image_version": version, "error": error,
            "failing_since": since, "checked": checked, "text": text,
            "machinetypes": [_printable(m) for m in entry.get("machinetypes") or []
                             if isinstance(m, str)]}


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
