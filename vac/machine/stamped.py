# SPDX-License-Identifier: BSD-2-Clause
"""Files whose time is read three ways: `started`, `heartbeat` and the factory's and
responder's heartbeat files.

The original reads these times from the file's ctime (int(st_ctime)); this project reads the
time written in the file (`started`) or the mtime (`heartbeat`). Both must name the same
second, or an original factory reading our directory (a site switching host by host, or
rolling back) reports a started_time one second later and another CPU %.

Which one is the truth: the ctime, the second the write landed in. Nobody can set it, so the
time written and the mtime are made to follow it: the file is written naming the wall
clock's second, its ctime is read back, and if the write landed in another second (a second
boundary crossed, or the kernel's coarse clock still in the previous second) it is written
again naming the second it landed in, until the three agree.

With an injected clock (tests, simulations) no ctime can agree with it: its time is written
as the truth, content and mtime, and the ctime is not looked at.

A fourth file cannot be written this way: joboutputs/shutdown_message, which the guest writes
(and whose mtime it can set to anything) or which lands on the host when the guest's PUT is
renamed into place. What the responder reports of it and of `finished` (machine_status and
machinetype_status shutdown_time, VacMon's messages) is therefore read as the original reads
it, the second it landed in (landed(): its ctime), so both name the same second for the same
directory. The cycle's own decisions (the shutdown_message grace, its own backoff) read the
mtime, bounded by `finished` and the cycle's time, as they do with an injected clock.
"""
from __future__ import annotations

import os
import time
from typing import Callable, Optional

from vac import fsutil

TRIES = 5   # each further try lands in the second the last one landed in, unless it crosses
WALL_CLOCK = time.time   # the factory's and the services' clock, unless a test injects one


def landed(path: str) -> Optional[int]:
    """The second the file landed in, as the original reads a time it reports: int(st_ctime)
    of the file itself (a final link is not followed); None if it is absent."""
    try:
        return int(os.lstat(path).st_ctime)
    except (FileNotFoundError, NotADirectoryError):
        return None


def now_for(clock: Callable[[], float]) -> Optional[float]:
    """The `when` to pass to write() for a caller with this clock: None for the wall clock
    (the second is the one the file lands in), else the injected clock's time."""
    return None if clock is WALL_CLOCK else clock()


def write(path: str, text_of: Callable[[int], str], when: Optional[float] = None,
          mode: int = 0o644) -> float:
    """Write path atomically with text_of(second) and return the time it names.

    Args:
        text_of: the file's text for the whole second it will name.
        when: an injected time (written as it is, text and mtime); None for the wall clock,
            where the text, the mtime and the ctime name one second.
    """
    if when is not None:
        fsutil.atomic_write(path, text_of(int(when)), mode=mode, mtime=when)
        return when
    second = int(time.time())
    for _ in range(TRIES):
        fsutil.atomic_write(path, text_of(second), mode=mode, mtime=second)
        landed = int(os.lstat(path).st_ctime)
        if landed == second:
            break
        second = landed
    return float(second)

