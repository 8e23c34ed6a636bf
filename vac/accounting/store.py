# SPDX-License-Identifier: BSD-2-Clause
"""Where job records go, each exactly once: apel-archive/, the dirq queue apel-outgoing/ that
SSM's ssmsend reads, or apel-rejected/ with the reason.

Exactly once across a SIGKILL anywhere: every step first looks whether it was already done,
from files named after the machine's UUID, and each step's own write is atomic.
- Archive: the file is apel-archive/<EndTime's UTC day>/<EndTime's HHMMSS><8 digits from the
  UUID> (14 decimal digits, as the original's names and as dirq's element regex wants, so
  re-publishing is still a copy into the queue). The record's presence is that file existing
  with our LocalJobId (a different record there moves us to the next number).
- Queue: the record is staged as apel-pending/<uuid>.record, then apel-pending/<uuid>.queued
  is written, then QueueSimple.add_path() links the staged file into the queue and unlinks
  it. A staged file with a second link is already in the queue. The one window left: a kill
  inside dirq's link-then-unlink, and ssmsend sending that element before vacd restarts,
  gives a second copy (the APEL server replaces a job record by its key).
- Rejected: apel-rejected/<uuid> (the record) and <uuid>.reason, never queued or archived.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from typing import Optional, Tuple

from vac import faults, fsutil
from vac.accounting import apel
from vac.paths import Paths

log = logging.getLogger(__name__)

UUID_RE = re.compile(r"\A[0-9a-fA-F-]{8,64}\Z")
RECORD_LIMIT = 64 * 1024
PROBES = 100
CRASH_PREFIX = "apel:"   # the record step's points for vac.faults (VAC_TEST_CRASH_AT)
CRASH_POINTS = ("apel:after-finished", "apel:before-archive", "apel:after-archive",
                "apel:before-queue")


def crash_point(name: str) -> None:
    """vac.faults' SIGKILL at `apel:<name>`, when the tests ask for it."""
    faults.crash_point(CRASH_PREFIX + name)


def pending_dir(paths: Paths) -> str:
    return os.path.join(paths.state_dir, "apel-pending")


def rejected_dir(paths: Paths) -> str:
    return os.path.join(paths.state_dir, "apel-rejected")


def _archive_candidates(paths: Paths, uuid: str, end_time: int):
    day = apel.utc_day(end_time)
    hhmmss = time.strftime("%H%M%S", time.gmtime(end_time))
    base = int(hashlib.sha256(uuid.encode()).hexdigest(), 16) % 10 ** 8
    for i in range(PROBES):
        yield os.path.join(paths.apel_archive, day, f"{hhmmss}{(base + i) % 10 ** 8:08d}")


def archived_path(paths: Paths, uuid: str, end_time: int) -> Tuple[str, bool]:
    """(the archive file for this record, whether it is already there)."""
    for path in _archive_candidates(paths, uuid, end_time):
        text = fsutil.read_optional(path, RECORD_LIMIT)
        if text is None:
            return path, False
        if apel.field_value(text, "LocalJobId") == uuid:
            return path, True
    raise OSError(f"no free archive name for {uuid} after {PROBES} tries")


def archive(paths: Paths, uuid: str, end_time: int, text: str) -> str:
    """Write the record to the archive unless it is there; return its path."""
    path, present = archived_path(paths, uuid, end_time)
    if not present:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        fsutil.atomic_write(path, text, mode=0o644)
    return path


def queue(paths: Paths, uuid: str, text: str) -> bool:
    """Put the record in the outgoing dirq queue unless it went there; True if queued now."""
    from dirq.QueueSimple import QueueSimple

    spool = pending_dir(paths)
    staged = os.path.join(spool, f"{uuid}.record")
    marker = os.path.join(spool, f"{uuid}.queued")
    os.makedirs(spool, mode=0o755, exist_ok=True)
    if not os.path.exists(marker):
        fsutil.atomic_write(staged, text, mode=0o644)
        fsutil.atomic_write(marker, "")
    try:
        links = os.lstat(staged).st_nlink
    except FileNotFoundError:
        return False                    # queued before
    if links > 1:                       # linked into the queue; the unlink did not happen
        os.unlink(staged)
        return False
    crash_point("before-queue")
    QueueSimple(paths.apel_outgoing, umask=0o022).add_path(staged)
    return True


def reject(paths: Paths, uuid: str, text: str, reason: str) -> str:
    where = rejected_dir(paths)
    os.makedirs(where, mode=0o755, exist_ok=True)
    path = os.path.join(where, uuid)
    fsutil.atomic_write(path, text)
    fsutil.atomic_write(path + ".reason", reason + "\n")
    return path


def forget(paths: Paths, uuid: str) -> None:
    """Drop the queue step's marker once the machine's accounting is complete."""
    fsutil.unlink_if_present(os.path.join(pending_dir(paths), f"{uuid}.queued"))


def safe_uuid(value: Optional[str]) -> Optional[str]:
    return value if value is not None and UUID_RE.match(value) else None
