# SPDX-License-Identifier: BSD-2-Clause
"""The record step of a finished machine, exactly once: marked pending before its `finished`
file, settled every cycle (archive, then the outgoing queue, or rejected), then unmarked.

A machine is marked by apel-pending/<its directory's name> before `finished` is written, so a
vacd killed at any point after that settles it when it runs again. Settling is idempotent (see
vac.accounting.store), and an error in it is logged with the machine's name, counted, and
retried next cycle; it never stops finishing or the cycle.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from vac import fsutil
from vac.accounting import apel, store
from vac.accounting.validate import RecordError, check_job, check_values
from vac.config.model import Config
from vac.errors import StateError
from vac.machine.directory import MachineDir
from vac.paths import Paths

log = logging.getLogger(__name__)

STALE_MARKER_SECONDS = 7 * 86400
SUFFIXES = (".record", ".queued")


@dataclass
class Settled:
    """What one settle pass did, by machine name (for logs, metrics and tests)."""

    archived: List[str] = field(default_factory=list)
    queued: List[str] = field(default_factory=list)
    rejected: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    errors: Dict[str, str] = field(default_factory=dict)   # machine name -> what failed
    finished: List[MachineDir] = field(default_factory=list)


def mark_pending(paths: Paths, directory: MachineDir) -> None:
    """Called by finishing just before the `finished` file is written."""
    where = store.pending_dir(paths)
    os.makedirs(where, mode=0o755, exist_ok=True)
    fsutil.atomic_write(os.path.join(where, os.path.basename(directory.path)), "")


def facts_of(directory: MachineDir) -> apel.JobFacts:
    """The run as the directory records it; StateError if it cannot be accounted."""
    uuid = store.safe_uuid(directory.job_id)
    if uuid is None:
        raise StateError(directory.path, "no usable jobfeatures/job_id (the machine's UUID)")
    started, ended = directory.started, directory.heartbeat_time
    if started is None or ended is None:
        raise StateError(directory.path, "no started or heartbeat file")
    rss = directory.read("jobfeatures/max_rss_bytes", 64)
    fqan = directory.read("accounting_fqan", 1024)
    return apel.JobFacts(uuid=uuid, machinetype=directory.machinetype, started=int(started),
                         ended=int(ended), cpu_seconds=int(directory.cpu_seconds),
                         processors=directory.processors, hs06=directory.hs06,
                         max_rss_bytes=int(rss.strip()) if rss and rss.strip().isdigit()
                         else None, fqan=fqan.strip() if fqan and fqan.strip() else None)


def why_not_accounted(config: Config, directory: MachineDir) -> Optional[str]:
    """The original's rule: started, a heartbeat, a configured machinetype, and a
    wallclock of at least fizzle_seconds; None when the machine is accounted."""
    machinetype = config.machinetypes.get(directory.machinetype)
    if directory.started is None:
        return "never started"
    if directory.heartbeat_time is None:
        return "no heartbeat"
    if machinetype is None:
        return f"machinetype {directory.machinetype} is no longer configured"
    wall = directory.heartbeat_time - directory.started
    if wall < machinetype.fizzle_seconds:
        return f"ran {int(wall)} s, less than fizzle_seconds {machinetype.fizzle_seconds}"
    return None


def account(config: Config, directory: MachineDir, now: float, result: Settled) -> None:
    """Archive and queue (or reject) this machine's record; each step at most once."""
    settings, paths = config.settings, config.settings.paths
    facts = facts_of(directory)
    fields = apel.job_fields(settings.site, settings.vac_space, settings.factory_name, facts)
    text = apel.render(apel.JOB_HEADER, fields)
    try:
        check_values(fields)
        check_job(text, now)
    except RecordError as e:
        path = store.reject(paths, facts.uuid, text, str(e))
        log.error("%s: APEL record rejected (%s), kept in %s", directory.name, e, path)
        result.rejected.append(directory.name)
        return
    store.crash_point("before-archive")
    path = store.archive(paths, facts.uuid, facts.ended, text)
    result.archived.append(directory.name)
    store.crash_point("after-archive")
    if settings.gocdb_sitename and facts.hs06 is not None:
        if store.queue(paths, facts.uuid, text):
            log.info("%s: APEL record queued for ssmsend (archived as %s)", directory.name, path)
        result.queued.append(directory.name)


def settle(config: Config, now: float,
           after: Optional[Callable[[MachineDir], None]] = None) -> Settled:
    """Account every machine marked pending whose `finished` file exists; `after` runs for each
    one settled (the VacMon machine_status is sent there, after `finished`)."""
    paths = config.settings.paths
    result = Settled()
    where = store.pending_dir(paths)
    try:
        entries = sorted(os.listdir(where))
    except FileNotFoundError:
        return result
    for name in entries:
        if name.startswith(".") or name.endswith(SUFFIXES):
            _expire_marker(where, name, now)
            continue
        _settle_one(config, name, now, result, after)
    return result


def _settle_one(config: Config, name: str, now: float, result: Settled,
                after: Optional[Callable[[MachineDir], None]]) -> None:
    paths = config.settings.paths
    marker = os.path.join(store.pending_dir(paths), name)
    path = os.path.join(paths.machines, name)
    try:
        directory = MachineDir(path)
    except StateError:
        fsutil.unlink_if_present(marker)
        return
    if not os.path.isdir(path) or os.path.islink(path):
        log.warning("%s: machine directory gone before its APEL record was written", name)
        fsutil.unlink_if_present(marker)
        return
    if directory.finished is None:
        return                          # finishing did not get that far; it runs again
    try:
        reason = why_not_accounted(config, directory)
        if reason is None:
            store.crash_point("after-finished")
            account(config, directory, now, result)
        else:
            result.skipped[directory.name] = reason
        if after is not None and directory.started is not None:   # VacMon: started ones only
            after(directory)
    except (OSError, StateError, ValueError) as e:
        log.error("%s: accounting failed, retried next cycle: %s", directory.name, e)
        result.errors[directory.name] = f"{directory.name}: accounting failed: {e}"
        return
    fsutil.unlink_if_present(marker)
    uuid = store.safe_uuid(directory.job_id)
    if uuid is not None:
        store.forget(paths, uuid)
    result.finished.append(directory)


def _expire_marker(where: str, name: str, now: float) -> None:
    path = os.path.join(where, name)
    when = fsutil.mtime_or_none(path)
    if name.endswith(".queued") and when is not None and now - when > STALE_MARKER_SECONDS:
        fsutil.unlink_if_present(path)
