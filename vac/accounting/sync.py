# SPDX-License-Identifier: BSD-2-Clause
"""APEL sync records: how many job records this factory archived for a month.

The archive holds each record under the UTC day of its EndTime (vac.accounting.store), the
month the APEL server counts it in. The newest record of the month gives Site and SubmitHost;
a record lacking either or naming others is skipped with a message, as the original did.
"""
from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from vac import fsutil
from vac.accounting import apel
from vac.paths import Paths

MONTH_RE = re.compile(r"\A(\d{4})(0[1-9]|1[0-2])\Z")
RECORD_LIMIT = 64 * 1024


class MonthError(ValueError):
    """A month argument that is not YYYYMM."""


@dataclass
class MonthCount:
    year: int
    month: int
    site: Optional[str] = None
    submit_host: Optional[str] = None
    jobs: int = 0
    skipped: List[str] = field(default_factory=list)

    def record(self) -> Optional[str]:
        if self.site is None or self.submit_host is None:
            return None
        return apel.sync_record(self.site, self.submit_host, self.jobs, self.year, self.month)


def parse_month(text: str) -> Tuple[int, int]:
    match = MONTH_RE.match(text)
    if not match:
        raise MonthError(f"{text!r} is not a month YYYYMM")
    return int(match.group(1)), int(match.group(2))


def default_month(now: float) -> Tuple[int, int]:
    """The month containing now - 24 h: a run on the 1st sums up the month that ended."""
    t = time.gmtime(now - 86400)
    return t.tm_year, t.tm_mon


def _archive_files(paths: Paths, year: int, month: int) -> List[Tuple[float, str]]:
    """(mtime, path) of every record file in the month's day directories, newest first."""
    prefix = f"{year:04d}{month:02d}"
    found = []
    root = paths.apel_archive
    try:
        days = [d for d in os.listdir(root) if d.startswith(prefix) and len(d) == 8]
    except FileNotFoundError:
        return []
    for day in days:
        where = os.path.join(root, day)
        if os.path.islink(where) or not os.path.isdir(where):
            continue
        for entry in os.scandir(where):
            if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False):
                found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name, entry.path))
    found.sort(reverse=True)
    return [(mtime, path) for mtime, _, path in found]


def count_month(paths: Paths, year: int, month: int) -> MonthCount:
    result = MonthCount(year=year, month=month)
    for _, path in _archive_files(paths, year, month):
        text = fsutil.read_optional(path, RECORD_LIMIT) or ""
        site, submit = apel.field_value(text, "Site"), apel.field_value(text, "SubmitHost")
        if not site or not submit:
            result.skipped.append(f"{path}: no Site or SubmitHost")
            continue
        if result.site is None:
            result.site, result.submit_host = site, submit
        if (site, submit) != (result.site, result.submit_host):
            result.skipped.append(f"{path}: Site {site} / SubmitHost {submit} differ from the "
                                  f"newest record's {result.site} / {result.submit_host}")
            continue
        result.jobs += 1
    return result
