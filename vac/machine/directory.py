# SPDX-License-Identifier: BSD-2-Clause
"""The per-machine directory in the original's layout, slot records, and machine states.

    machines/<created>_<machinetype>_<machine FQDN>/
        started  heartbeat  finished  user_data  accounting_fqan  root_public_key  ip
        machinefeatures/  jobfeatures/  joboutputs/  backend.json (ours)
    slots/<machine FQDN>   "<created> <machinetype> <machine_model>"

Only the factory writes here; the responder and metadata service only read. Everything under
joboutputs/ is written by the guest and is read with size bounds and without following links.
Times that the original took from ctime (`started`, `heartbeat`) are taken from the time
written in the file or from its mtime; vac.machine.stamped writes them so that all three name
one second, and keeps an injected clock's time in tests.
"""
from __future__ import annotations

import enum
import json
import os
import unicodedata
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional, Tuple

from vac import fsutil
from vac.errors import StateError
from vac.faults import crash_point
from vac.machine import heartbeat, joboutputquota, removal, stamped
from vac.paths import Paths

SHUTDOWN_MESSAGE_LIMIT = 4096
BACKEND_RECORD_VERSION = 1
_UNPRINTABLE = ("Cc", "Cf")     # controls (terminal escapes, NUL) and format characters


def _printable(text: str) -> str:
    """A guest's text with control and format characters replaced by U+FFFD, so that showing
    it (vac slots, logs, VacQuery replies) cannot drive a terminal or reorder what is shown."""
    return "".join("\ufffd" if unicodedata.category(c) in _UNPRINTABLE else c for c in text)


class MachineState(str, enum.Enum):
    """Machine states; the values are the strings VacQuery and the CLI have always used."""

    UNKNOWN = "Unknown"
    SHUTDOWN = "Shut down"
    STARTING = "Starting"
    RUNNING = "Running"
    PAUSED = "Paused"
    ZOMBIE = "Zombie"
    FAILED = "Failed"     # its creation failed: finished without ever starting


@dataclass(frozen=True)
class SlotRecord:
    """slots/<name>: which machine directory currently belongs to a slot."""

    created: int
    machinetype: str
    model: str


def read_slot_record(paths: Paths, machine_name: str) -> Optional[SlotRecord]:
    text = fsutil.read_optional(paths.slot_record(machine_name), 1024)
    if text is None:
        return None
    parts = text.split()
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    return SlotRecord(int(parts[0]), parts[1], parts[2])


def write_slot_record(paths: Paths, machine_name: str, record: SlotRecord) -> None:
    fsutil.atomic_write(paths.slot_record(machine_name),
                        f"{record.created} {record.machinetype} {record.model}")


def unfinished_machines(paths: Paths) -> Iterator[Tuple[str, SlotRecord, MachineDir]]:
    """(slot name, slot record, directory) of each slot whose machine has not finished."""
    names = sorted(os.listdir(paths.slots)) if os.path.isdir(paths.slots) else []
    for name in names:
        if name.startswith("."):
            continue
        record = read_slot_record(paths, name)
        directory = MachineDir.for_record(paths, name, record)
        if record is not None and directory is not None and directory.finished is None:
            yield name, record, directory


class MachineDir:
    """Reader and writer of one machine directory."""

    def __init__(self, path: str):
        self.path = path
        parts = os.path.basename(path).split("_")
        if len(parts) != 3 or not parts[0].isdigit():
            raise StateError(path, "not a machine directory name <created>_<type>_<name>")
        self.created = int(parts[0])
        self.machinetype = parts[1]
        self.name = parts[2]

    def __repr__(self) -> str:
        return f"MachineDir({self.path!r})"

    @classmethod
    def for_slot(cls, paths: Paths, machine_name: str) -> Optional[MachineDir]:
        """The directory the slot record points at, or None if either is missing."""
        return cls.for_record(paths, machine_name, read_slot_record(paths, machine_name))

    @classmethod
    def for_record(cls, paths: Paths, machine_name: str,
                   record: Optional[SlotRecord]) -> Optional[MachineDir]:
        """The directory an already-read slot record points at, or None if it is missing."""
        if record is None:
            return None
        path = paths.machine_dir(record.created, record.machinetype, machine_name)
        return cls(path) if os.path.isdir(path) and not os.path.islink(path) else None

    @classmethod
    def create(cls, paths: Paths, created: int, machinetype: str,
               machine_name: str) -> MachineDir:
        path = paths.machine_dir(created, machinetype, machine_name)
        os.makedirs(path, mode=0o755)
        crash_point("create:after-makedirs")
        for sub in ("machinefeatures", "jobfeatures", "joboutputs"):
            os.mkdir(os.path.join(path, sub), 0o755)
        return cls(path)

    # Generic access -------------------------------------------------------------------

    def file(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def write(self, rel: str, data: Any, mode: int = 0o644, mtime: Optional[float] = None) -> None:
        fsutil.atomic_write(self.file(rel), data if isinstance(data, bytes) else str(data),
                            mode=mode, mtime=mtime)

    def read(self, rel: str, limit: int = fsutil.DEFAULT_READ_LIMIT) -> Optional[str]:
        """A file's text, or None if absent, a symlink, not regular, or over `limit`."""
        parent = os.path.dirname(self.file(rel))
        if parent != self.path and os.path.islink(parent):
            return None
        return fsutil.read_optional(self.file(rel), limit)

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.file(rel))

    def mtime(self, rel: str) -> Optional[float]:
        return fsutil.mtime_or_none(self.file(rel))

    def remove(self, rel: str) -> None:
        fsutil.unlink_if_present(self.file(rel))

    # Typed values -----------------------------------------------------------------------

    def _number(self, rel: str) -> Optional[float]:
        text = self.read(rel, 256)
        try:
            return float(text.split()[0]) if text and text.split() else None
        except ValueError:
            return None

    @property
    def started(self) -> Optional[float]:
        """Start time: the `started` file's content, else its mtime; None if not started."""
        if not self.exists("started"):
            return None
        return self._number("started") or self.mtime("started")

    @property
    def finished(self) -> Optional[float]:
        return self.mtime("finished") if self.exists("finished") else None

    @property
    def heartbeat_time(self) -> Optional[float]:
        return self.mtime(heartbeat.NAME)

    @property
    def cpu_seconds(self) -> float:
        return self.heartbeat_values()[0] or 0.0

    def heartbeat_values(self) -> Tuple[Optional[float], Optional[float]]:
        """(CPU seconds, CPU %) of the heartbeat file (vac.machine.heartbeat)."""
        return heartbeat.parse(self.read(heartbeat.NAME, heartbeat.READ_LIMIT))

    @property
    def scratch_bytes(self) -> Optional[int]:
        """The bytes in use in the machine's scratch as its last heartbeat says them; None
        when it has none."""
        return heartbeat.scratch_bytes(self.read(heartbeat.NAME, heartbeat.READ_LIMIT))

    def write_heartbeat(self, cpu_seconds: float, now: Optional[float] = None,
                        scratch: Optional[int] = None) -> float:
        """Rewrite the heartbeat with these CPU seconds, the CPU % since the last one and the
        scratch bytes in use (None: the machine has no scratch); return its time. `now`: an
        injected time, else None: the second the file lands in, its mtime and ctime agreeing
        (vac.machine.stamped)."""
        previous_cpu, previous_time = self.cpu_seconds, self.heartbeat_time
        return stamped.write(self.file(heartbeat.NAME), lambda second: heartbeat.line(
            cpu_seconds, previous_cpu, previous_time, second if now is None else now,
            scratch), now)

    def write_first_heartbeat(self, when: Optional[float] = None) -> float:
        """The heartbeat of a machine that starts (created, or adopted after a crash);
        `when` as write_heartbeat's `now`."""
        return stamped.write(self.file(heartbeat.NAME), lambda second: heartbeat.FIRST, when)

    def write_started(self, when: Optional[float] = None) -> float:
        """`started`, holding its time; `when` as write_heartbeat's `now`."""
        return stamped.write(self.file("started"), str, when)

    @property
    def processors(self) -> int:
        value = self._number("jobfeatures/allocated_cpu")
        return int(value) if value else 1

    @property
    def shutdown_time(self) -> Optional[int]:
        value = self._number("jobfeatures/shutdowntime_job")
        return int(value) if value is not None else None

    @property
    def hs06(self) -> Optional[float]:
        return self._number("machinefeatures/hs06")

    @property
    def job_id(self) -> Optional[str]:
        text = self.read("jobfeatures/job_id", 256)
        return text.strip() or None if text is not None else None

    @property
    def shutdown_message(self) -> Optional[str]:
        """The first line of joboutputs/shutdown_message, stripped; None if absent or unsafe."""
        text = self.read("joboutputs/shutdown_message", SHUTDOWN_MESSAGE_LIMIT)
        if text is None:
            return None
        lines = text.strip().splitlines()
        return _printable(lines[0].strip()) if lines else ""

    @property
    def shutdown_message_time(self) -> Optional[float]:
        return self.mtime("joboutputs/shutdown_message")

    def write_shutdown_message_if_none(self, message: str, when: Optional[float] = None) -> bool:
        """Write Vac's message only if the machine wrote none; True if written.

        A directory whose creation was interrupted may lack joboutputs/: it is made here.

        Raises:
            StateError: joboutputs is a symlink or not a directory.
        """
        if self.exists("joboutputs/shutdown_message"):
            return False
        self._ensure_subdir("joboutputs")
        self._write_own_output("shutdown_message", message, when)
        return True

    def _write_own_output(self, name: str, message: str, when: Optional[float]) -> None:
        """Write vacd's own file into joboutputs/: if the payload has filled it up to its
        project quota (vac.machine.joboutputquota), the limit is lifted and it is written
        again."""
        try:
            self.write(f"joboutputs/{name}", message, mtime=when)
        except OSError as e:
            if not joboutputquota.full(e) or not joboutputquota.lift(self.file("joboutputs")):
                raise
            self.write(f"joboutputs/{name}", message, mtime=when)

    def shutdown_message_refusal(self) -> Optional[str]:
        """Why joboutputs/shutdown_message exists but cannot be read (a symlink, FIFO,
        directory, or more than SHUTDOWN_MESSAGE_LIMIT bytes); None if absent or readable."""
        path = self.file("joboutputs/shutdown_message")
        if os.path.islink(self.file("joboutputs")):
            return "joboutputs is a symlink"
        if not os.path.lexists(path):
            return None
        try:
            fsutil.read_bytes_nofollow(path, SHUTDOWN_MESSAGE_LIMIT)
        except FileNotFoundError:
            return None
        except StateError as e:
            return str(e)[len(path) + 2:]
        return None

    def replace_refused_shutdown_message(self, reason: str, when: Optional[float]) -> str:
        """Move an unreadable shutdown_message aside and write Vac's own coded message.

        Returns the message written. The guest's object is kept (renamed, never followed) as
        joboutputs/shutdown_message.refused-<time> so a site admin can look at it.
        """
        message = f"700 Vac: machine's shutdown_message refused: {reason}"
        self._ensure_subdir("joboutputs")
        aside = f"shutdown_message.refused-{int(when or 0)}"
        try:
            os.rename(self.file("joboutputs/shutdown_message"), self.file(f"joboutputs/{aside}"))
        except FileNotFoundError:
            pass
        except OSError:
            # A same-named object is in the way: remove the refused one instead.
            removal.remove_tree(self.file("joboutputs/shutdown_message"))
        self._write_own_output("shutdown_message", message, when)
        return message

    def _ensure_subdir(self, rel: str) -> None:
        path = self.file(rel)
        if not os.path.lexists(path):
            os.mkdir(path, 0o755)
        elif os.path.islink(path) or not os.path.isdir(path):
            raise StateError(path, "is not a directory; refused")

    def disk_state(self) -> MachineState:
        """The state from files alone (what the responder sees): `finished` first, so a
        machine whose creation failed (finished, never started) is Failed, not Starting."""
        if self.exists("finished"):
            return MachineState.SHUTDOWN if self.exists("started") else MachineState.FAILED
        if not self.exists("started"):
            return MachineState.STARTING
        return MachineState.RUNNING

    # The backend's own record (ours, versioned JSON) ------------------------------------

    def read_backend_record(self) -> Dict[str, Any]:
        text = self.read("backend.json", 64 * 1024)
        if not text:
            return {}
        try:
            record = json.loads(text)
        except ValueError:
            return {}
        return record if isinstance(record, dict) else {}

    def write_backend_record(self, record: Dict[str, Any]) -> None:
        self.write("backend.json", json.dumps({"version": BACKEND_RECORD_VERSION, **record},
                                              sort_keys=True))
