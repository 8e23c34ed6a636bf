# SPDX-License-Identifier: BSD-2-Clause
"""The cycle's housekeeping: expired machine directories and temp files of killed writes.

Each step takes `guard(name, what, action, *args)`, the factory's bulkhead, so a directory that
cannot be removed stays with that directory and the cycle goes on.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, List, Optional

from vac import fsutil
from vac.accounting import store
from vac.config.model import Config
from vac.cycle import planner
from vac.cycle.observe import Observation
from vac.machine import removal
from vac.paths import Paths

log = logging.getLogger(__name__)

Guard = Callable[..., object]


def expire(config: Config, seen: Observation, now: float, guard: Guard) -> None:
    """Remove finished machine directories past their machinetype's machines_dir_days."""
    machines_dir = config.settings.paths.machines
    entries = []
    for entry in os.scandir(machines_dir):
        if not entry.name.startswith(".") and entry.name.count("_") == 2 and \
                entry.is_dir(follow_symlinks=False):
            machinetype = entry.name.split("_")[1]
            entries.append((entry.path, machinetype,
                            fsutil.mtime_or_none(os.path.join(entry.path, "heartbeat"))))
    keep = [d.path for d in seen.directories.values() if d.finished is None]
    for path in planner.expired(entries, config.machinetypes, now, keep=keep):
        log.info("removing expired machine directory %s", path)
        guard(os.path.basename(path).split("_")[-1], "expiry", removal.remove_tree, path)
    # What a bounded removal left (deep trees), and what a killed vacd left mid-removal.
    guard("machines/", "removal of retired directories", removal.remove_retired, machines_dir)


def sweep(config: Config, seen: Observation, now: float, everything: bool) -> int:
    """Remove the temp files killed atomic writes left (state, slots, machines): with
    `everything` (a new vacd's first cycle: it holds the state directory's lock, so nobody
    else is writing there) all of them, else those older than an hour. The APEL records'
    directories (pending, rejected, the archive's days) only then: only vacd's cycle writes
    there, so what a killed vacd left the next one's first cycle finds. The pipe cache, which
    `vac config check --fetch` also writes, always by age. Returns how many were removed."""
    paths = config.settings.paths
    dirs = [paths.state_dir, paths.slots, paths.finishes]
    if everything:
        dirs += _apel_dirs(paths)
    for directory in seen.directories.values():
        dirs += [directory.path] + [directory.file(sub) for sub in
                                    ("machinefeatures", "jobfeatures", "joboutputs")]
    age: Optional[float] = None if everything else removal.TEMP_MAX_AGE
    swept = removal.sweep_temp_files(paths.pipescache, now)
    for path in dirs:
        try:
            swept += removal.sweep_temp_files(path, now, max_age=age)
        except OSError as e:
            log.warning("cannot sweep temp files in %s: %s", path, e)
    if swept:
        log.info("removed %d temp files left by interrupted writes", swept)
    return swept


def _apel_dirs(paths: Paths) -> List[str]:
    """The APEL records' pending and rejected directories and the archive's day directories
    (never through a link)."""
    try:
        days = [e.path for e in os.scandir(paths.apel_archive) if e.is_dir(follow_symlinks=False)]
    except OSError:
        days = []
    return [store.pending_dir(paths), store.rejected_dir(paths)] + days
