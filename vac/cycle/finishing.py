# SPDX-License-Identifier: BSD-2-Clause
"""Finishing one machine: final observation, outcome message, heartbeat, finished, finishes/
(vac.machine.finishes).

Run exactly once per machine, when the factory first sees it shut down (§3.3, §19 item 58).
"""
from __future__ import annotations

import logging
from typing import Optional

from vac import fsutil
from vac.accounting import records as accounting
from vac.backends.base import Backend, MachineStatus
from vac.config.model import MachineType
from vac.errors import BackendError
from vac.faults import crash_point
from vac.machine.directory import MachineDir
from vac.machine.finishes import update_finishes
from vac.machine.outcome import outcome_message
from vac.paths import Paths

log = logging.getLogger(__name__)


def write_heartbeat(directory: MachineDir, cpu_seconds: float, now: float) -> None:
    """Rewrite the per-machine heartbeat: "<cpu seconds> <cpu % since the last heartbeat>".

    CPU seconds are whole, as the original wrote them: its readers (a rolled-back vacd, its
    responder) parse the first field with int(), so "12.3" would read as 0."""
    previous_time = directory.heartbeat_time
    previous_cpu = directory.cpu_seconds
    whole = int(max(cpu_seconds, 0.0))
    text = str(whole)
    if previous_time is not None and now > previous_time and whole >= previous_cpu:
        percent = 100.0 * (whole - previous_cpu) / (now - previous_time)
        text += f" {percent:.1f}"
    directory.write("heartbeat", text + "\n", mtime=now)


def finish_machine(paths: Paths, directory: MachineDir, machinetype: Optional[MachineType],
                   backend: Optional[Backend], now: float) -> Optional[MachineStatus]:
    """Record the end of a machine and release what the backend still holds.

    Returns the backend's final status (None when no backend could be asked).
    """
    final = None
    if backend is not None:
        try:
            final = backend.collect(directory.name, directory)
        except BackendError as e:
            log.warning("%s: final observation failed: %s", directory.name, e)
    crash_point("finish:after-collect")
    started = directory.started
    if started is not None and final is not None and final.cpu_seconds > directory.cpu_seconds:
        write_heartbeat(directory, final.cpu_seconds, now)
    refusal = directory.shutdown_message_refusal()
    if refusal is not None:
        message = directory.replace_refused_shutdown_message(refusal, now)
        log.warning("%s: %s", directory.name, message)
    if machinetype is not None and started is not None:
        ended = directory.heartbeat_time or now
        synthesised = outcome_message(directory.shutdown_message, started, ended,
                                      machinetype.fizzle_seconds)
        if synthesised and directory.shutdown_message is None:
            directory.write_shutdown_message_if_none(synthesised, when=now)
    crash_point("finish:after-message")
    try:  # before `finished`: a vacd killed after it still writes the APEL record
        accounting.mark_pending(paths, directory)
    except OSError as e:
        log.error("%s: cannot mark for accounting, no APEL record: %s", directory.name, e)
    fsutil.touch(directory.file("finished"), now)
    crash_point("finish:after-finished")
    update_finishes(paths, directory)
    crash_point("finish:after-finishes")
    if backend is not None:
        try:
            backend.destroy(directory.name, directory)
        except BackendError as e:
            log.warning("%s: cleanup after finish failed: %s", directory.name, e)
    log.info("%s finished (%s): %s", directory.name, directory.machinetype,
             directory.shutdown_message or "no shutdown message")
    return final

