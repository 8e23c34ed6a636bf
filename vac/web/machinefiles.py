# SPDX-License-Identifier: BSD-2-Clause
"""A machine's page data: its files, each read bounded and never through a symlink.

A machine is named either by its slot (the slot's current machine) or by its directory's
name under machines/; both are checked against this factory's slots and the directory's
own listing, so no path from a request is ever joined unchecked (no traversal). Shown: the
MJF (machinefeatures/ and jobfeatures/ values), the joboutputs/ listing (name, kind, size),
the shutdown message, the heartbeat, backend.json (with image_version when present) and the
tail of console.log. Guest-written names and contents are passed on as text, to be escaped.
"""
from __future__ import annotations

import errno
import os
import stat
from typing import Any, Dict, List, Optional, Tuple

from vac.config.model import Config
from vac.machine.directory import SHUTDOWN_MESSAGE_LIMIT, MachineDir, read_slot_record
from vac.machine.slots import make_slots
from vac.web.status import heartbeat, image_version

LISTING_LIMIT = 200         # joboutputs entries listed
COUNT_LIMIT = 10000         # entries counted before giving up
MJF_FILES_LIMIT = 64        # MJF keys shown per directory
VALUE_LIMIT = 1024          # bytes of one MJF value or of the heartbeat
TAIL_LIMIT = 16 * 1024      # bytes of the console tail
NAME_LIMIT = 255


def slot_names(config: Config) -> List[str]:
    s = config.settings
    return [slot.name for slot in make_slots(s.factory_name, s.host_processors)]


def directory_of_slot(config: Config, slot: str) -> Optional[MachineDir]:
    """The slot's current machine directory; None for an unknown slot or a free one."""
    if slot not in slot_names(config):
        return None
    paths = config.settings.paths
    return MachineDir.for_record(paths, slot, read_slot_record(paths, slot))


def directory_named(config: Config, name: str) -> Optional[MachineDir]:
    """machines/<name> if name is one of its entries, of a slot of this factory, and a real
    directory (not a symlink); None otherwise."""
    parts = name.split("_")
    if len(parts) != 3 or not parts[0].isdigit() or "/" in name or name.startswith("."):
        return None
    if parts[2] not in slot_names(config):
        return None
    machines = config.settings.paths.machines
    try:
        if name not in os.listdir(machines):
            return None
    except OSError:
        return None
    path = os.path.join(machines, name)
    if os.path.islink(path) or not os.path.isdir(path):
        return None
    return MachineDir(path)


def tail(path: str, limit: int = TAIL_LIMIT) -> Dict[str, Any]:
    """The last `limit` bytes of a regular file, not followed if a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return {"present": False, "text": None, "size": None, "note": None}
        note = "a symlink: not followed" if e.errno == errno.ELOOP else (e.strerror or str(e))
        return {"present": True, "text": None, "size": None, "note": note}
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return {"present": True, "text": None, "size": None, "note": "not a regular file"}
        start = max(0, st.st_size - limit)
        data = os.pread(fd, limit, start)
    finally:
        os.close(fd)
    return {"present": True, "text": data.decode("utf-8", errors="replace"),
            "size": st.st_size, "note": f"last {len(data)} of {st.st_size} bytes"
            if start else None}


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "directory"),
                       (stat.S_ISLNK, "symlink"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return word
    return "special"


def display_name(name: str) -> str:
    """A guest's file name as text: bytes that are not UTF-8 (kept by os.listdir as
    surrogates) become U+FFFD, cut to NAME_LIMIT characters."""
    return os.fsencode(name).decode("utf-8", errors="replace")[:NAME_LIMIT]


def _names(path: str) -> Tuple[List[str], int]:
    """A directory's entry names, sorted (at most COUNT_LIMIT), and how many were seen."""
    names: List[str] = []
    total = 0
    try:
        with os.scandir(path) as it:
            for entry in it:
                total += 1
                if total > COUNT_LIMIT:
                    break
                names.append(entry.name)
    except OSError:         # removed or replaced while being read
        return [], 0
    names.sort()
    return names, total


def listing(path: str, limit: int = LISTING_LIMIT) -> Dict[str, Any]:
    """A directory's entries (name, kind, size), sorted, at most `limit`; never followed."""
    if os.path.islink(path) or not os.path.isdir(path):
        return {"present": os.path.lexists(path), "entries": [], "total": 0,
                "note": "a symlink or not a directory: not read" if os.path.lexists(path)
                else None}
    names, total = _names(path)
    entries = [entry for entry in (_entry(path, name) for name in names[:limit]) if entry]
    more = total > len(entries)
    return {"present": True, "entries": entries, "total": total,
            "note": (f"first {len(entries)} of {'more than ' if total > COUNT_LIMIT else ''}"
                     f"{min(total, COUNT_LIMIT)} entries") if more else None}


def _entry(path: str, name: str) -> Optional[Dict[str, Any]]:
    try:
        st = os.lstat(os.path.join(path, name))
    except OSError:
        return None
    return {"name": display_name(name), "kind": _kind(st.st_mode),
            "size": st.st_size if stat.S_ISREG(st.st_mode) else None}


def mjf(directory: MachineDir, sub: str) -> List[Dict[str, Any]]:
    """The key/value files of machinefeatures/ or jobfeatures/, bounded."""
    folder = directory.file(sub)
    if os.path.islink(folder) or not os.path.isdir(folder):
        return []
    values = []
    for name in _names(folder)[0][:MJF_FILES_LIMIT]:
        entry = _entry(folder, name)
        if entry is None:
            continue
        text = directory.read(f"{sub}/{name}", VALUE_LIMIT) if entry["kind"] == "file" else None
        note = None if text is not None else (
            f"{entry['kind']}: not read" if entry["kind"] != "file" else
            f"not read (over {VALUE_LIMIT} bytes, or changed)")
        values.append({"key": entry["name"], "value": text, "note": note})
    return values


def machine_view(config: Config, directory: MachineDir, now: float) -> Dict[str, Any]:
    """Everything the machine page shows (and /api/machine serves)."""
    record = read_slot_record(config.settings.paths, directory.name)
    current = MachineDir.for_record(config.settings.paths, directory.name, record)
    is_current = current is not None and current.path == directory.path
    backend = directory.read_backend_record()
    return {
        "machine": os.path.basename(directory.path), "slot": directory.name,
        "machinetype": directory.machinetype, "current": is_current,
        "state": directory.disk_state().value, "created": directory.created,
        "started": directory.started, "finished": directory.finished,
        "processors": directory.processors, "cpu_seconds": heartbeat(directory)[0],
        "shutdown_time": directory.shutdown_time, "job_id": directory.job_id,
        "model": record.model if record is not None and is_current else None,
        "shutdown_message": directory.read("joboutputs/shutdown_message",
                                           SHUTDOWN_MESSAGE_LIMIT),
        "heartbeat": {"text": directory.read("heartbeat", VALUE_LIMIT),
                      "time": directory.heartbeat_time},
        "image_version": image_version(directory),
        "backend": {k: (v if isinstance(v, (int, float, bool)) or v is None else str(v)[:512])
                    for k, v in sorted(backend.items())[:64]},
        "machinefeatures": mjf(directory, "machinefeatures"),
        "jobfeatures": mjf(directory, "jobfeatures"),
        "joboutputs": listing(directory.file("joboutputs")),
        "console": tail(directory.file("console.log")), "time": int(now),
        "slot_idle": None}
