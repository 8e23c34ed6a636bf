# SPDX-License-Identifier: BSD-2-Clause
"""Finishing one machine, in one order: collect its last state, record its end, destroy it once.

Run exactly once per machine: when the factory first sees it shut down, or when it ends a
running one (wall time, heartbeat rule, paused, yield, pressure, drain).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

from vac import fsutil
from vac.accounting import records as accounting
from vac.backends.base import Backend, MachineStatus
from vac.config.model import MachineType
from vac.errors import BackendError
from vac.faults import crash_point
from vac.machine import stamped
from vac.machine.directory import MachineDir
from vac.machine.finishes import update_finishes
from vac.machine.outcome import outcome_message
from vac.paths import Paths

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ending:
    """The factory ends a running machine: the message it gets if it wrote none, and why."""

    message: Optional[str]
    reason: str


@dataclass(frozen=True)
class Finished:
    """What finishing found: the backend's final status (None when it could not be asked)
    and, for a machine the factory ended, why the backend could not destroy it."""

    final: Optional[MachineStatus]
    destroy_error: Optional[str] = None


def finish_machine(paths: Paths, directory: MachineDir, machinetype: Optional[MachineType],
                   backend: Optional[Backend], now: float,
                   ending: Optional[Ending] = None,
                   clock: Optional[Callable[[], float]] = None) -> Finished:
    """Collect, record, then destroy once.

    A machine the factory ends is first asked to stop (libvirt: an ACPI shutdown), so that
    what it prints on its way down is there when collect reads it. collect() is the one read
    of the machine's last state (exit code, OOM kill, console, CPU seconds): it comes before
    the destroy, which takes the container, domain or cgroup with it. The outcome (heartbeat,
    message, accounting mark, `finished`, finishes/) is on disk before the destroy, so a vacd
    killed after it leaves nothing unrecorded; a machine left running by a kill or a failed
    destroy is finished on disk, and the zombie killer removes it in the next cycle.
    `clock` stamps the last heartbeat when it is written (vac.machine.stamped; None: `now`).
    """
    if ending is not None and backend is not None:
        _stop(backend, directory)
    final = _collect(backend, directory)
    crash_point("finish:after-collect")
    if ending is not None:
        if ending.message:  # after collect: an OOM kill it found is the truer message
            directory.write_shutdown_message_if_none(ending.message, when=now)
        crash_point("destroy:after-message")
    _record(paths, directory, machinetype, final, now, clock)
    error = _destroy(backend, directory, ending)
    if ending is not None and error is None:
        crash_point("destroy:after-backend")
    return Finished(final, error)


def _stop(backend: Backend, directory: MachineDir) -> None:
    try:
        backend.stop(directory.name, directory)
    except BackendError as e:
        log.warning("%s: stop failed, destroying it all the same: %s", directory.name, e)


def _collect(backend: Optional[Backend], directory: MachineDir) -> Optional[MachineStatus]:
    if backend is None:
        return None
    try:
        return backend.collect(directory.name, directory)
    except BackendError as e:
        log.warning("%s: final observation failed: %s", directory.name, e)
        return None


def _record(paths: Paths, directory: MachineDir, machinetype: Optional[MachineType],
            final: Optional[MachineStatus], now: float,
            clock: Optional[Callable[[], float]] = None) -> None:
    """Heartbeat, outcome message, accounting mark, `finished`, finishes/<machinetype>."""
    started = directory.started
    if started is not None and final is not None and final.cpu_seconds > directory.cpu_seconds:
        directory.write_heartbeat(final.cpu_seconds,
                                  now if clock is None else stamped.now_for(clock))
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
    log.info("%s finished (%s): %s", directory.name, directory.machinetype,
             directory.shutdown_message or "no shutdown message")


def _destroy(backend: Optional[Backend], directory: MachineDir,
             ending: Optional[Ending]) -> Optional[str]:
    """Destroy once; the error for a machine the factory ended (a warning otherwise)."""
    if backend is None:
        return None
    try:
        backend.destroy(directory.name, directory)
    except BackendError as e:
        if ending is not None:
            return str(e)
        log.warning("%s: cleanup after finish failed: %s", directory.name, e)
        return None
    if ending is not None:
        log.info("%s destroyed: %s", directory.name, ending.reason)
    return None
