# SPDX-License-Identifier: BSD-2-Clause
"""finishes/<machinetype>: the record naming the most recently created finished machine of each
machinetype, "<created> <machinetype> <machine>" (§3.3). Its one writer (finishing) and its one
reader (the census, in the cycle and in the responder's replies).
"""
from __future__ import annotations

import os
from typing import Optional

from vac import fsutil
from vac.machine.directory import MachineDir
from vac.machine.outcome import LastOutcome
from vac.paths import Paths

RECORD_LIMIT = 1024     # bytes read of a finishes/ record


def update_finishes(paths: Paths, directory: MachineDir) -> None:
    """finishes/<machinetype> names the most recently created finished machine of its type."""
    record = paths.finish_record(directory.machinetype)
    current = fsutil.read_optional(record, RECORD_LIMIT)
    if current:
        parts = current.split()
        if parts and parts[0].isdigit() and int(parts[0]) > directory.created:
            return
    os.makedirs(paths.finishes, exist_ok=True)
    fsutil.atomic_write(record, f"{directory.created} {directory.machinetype} {directory.name}")


def last_outcome(paths: Paths, machinetype: str) -> Optional[LastOutcome]:
    """The finished machine named by finishes/<machinetype>, as the census wants it."""
    text = fsutil.read_optional(paths.finish_record(machinetype), RECORD_LIMIT)
    parts = text.split() if text else []
    if len(parts) != 3 or not parts[0].isdigit():
        return None
    path = paths.machine_dir(int(parts[0]), parts[1], parts[2])
    if not os.path.isdir(path):
        return None
    directory = MachineDir(path)
    return LastOutcome(message=directory.shutdown_message,
                       time=directory.shutdown_message_time or directory.finished,
                       machine=directory.name, started=directory.started,
                       created=directory.created)
