# SPDX-License-Identifier: BSD-2-Clause
"""finishes/<machinetype>: the record naming the finished machine of each machinetype whose
outcome was reported last, "<created> <machinetype> <machine>" (the original's format;
the original named the most recently created one, which hid an abort reported after a younger
machine's success). Its one writer (finishing) and its one reader (the census, in the cycle
and in the responder's replies).
"""
from __future__ import annotations

import os
from typing import Optional

from vac import fsutil
from vac.machine import stamped
from vac.machine.directory import MachineDir
from vac.machine.outcome import LastOutcome, latest
from vac.paths import Paths

RECORD_LIMIT = 1024     # bytes read of a finishes/ record
SHUTDOWN_MESSAGE = "joboutputs/shutdown_message"


def update_finishes(paths: Paths, directory: MachineDir) -> None:
    """Name this finished machine in finishes/<machinetype> unless the one named there was
    reported later (vac.machine.outcome.latest)."""
    mine = outcome_of(directory)
    current = _named(paths, directory.machinetype)
    if current is not None and current.path != directory.path and \
            latest(outcome_of(current), mine) is not mine:
        return
    os.makedirs(paths.finishes, exist_ok=True)
    fsutil.atomic_write(paths.finish_record(directory.machinetype),
                        f"{directory.created} {directory.machinetype} {directory.name}")


def last_outcome(paths: Paths, machinetype: str, landed: bool = False) -> Optional[LastOutcome]:
    """The finished machine named by finishes/<machinetype>, as the census wants it; `landed`
    as outcome_of's."""
    directory = _named(paths, machinetype)
    return outcome_of(directory, landed) if directory is not None else None


def outcome_of(directory: MachineDir, landed: bool = False) -> LastOutcome:
    """A finished machine's outcome, timed when it was reported: when its shutdown_message
    was written, never later than `finished` (a guest cannot date its message ahead).

    The cycle times it by the files' mtimes; `landed` (what the responder reports) by the
    seconds they landed in, their ctimes, as the original reports them (vac.machine.stamped).
    """
    if landed:
        told = stamped.landed(directory.file(SHUTDOWN_MESSAGE))
        finished = stamped.landed(directory.file("finished"))
    else:
        told, finished = directory.shutdown_message_time, directory.finished
    when = finished if told is None else told if finished is None else min(told, finished)
    return LastOutcome(message=directory.shutdown_message, time=when, machine=directory.name,
                       started=directory.started, created=directory.created)


def _named(paths: Paths, machinetype: str) -> Optional[MachineDir]:
    """The machine directory finishes/<machinetype> names, if it is there."""
    text = fsutil.read_optional(paths.finish_record(machinetype), RECORD_LIMIT)
    parts = text.split() if text else []
    if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()):
        return None
    path = paths.machine_dir(int(parts[0]), parts[1], parts[2])
    return MachineDir(path) if os.path.isdir(path) else None
