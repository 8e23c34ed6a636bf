# SPDX-License-Identifier: BSD-2-Clause
"""The metadata servers' heartbeat files: `mjf-heartbeat` and `metadata-heartbeat`.

The original's vacd-mjf and vacd-metadata daemons each rewrote
<state_dir>/<name>-heartbeat (the time, one line) every turn of their serving loop, and
factory_status reports those files' times (vac.space.replies.HEARTBEATS), which VacMon and
`vac factories --json` show as the services' liveness. Here each server's own serving loop
calls ServiceHeartbeat.beat() (http.server's service_actions, every poll interval), so the
file is fresh exactly while that server serves: a server that is closed or whose thread died
leaves it to age. Written atomically, at most once per INTERVAL; a failure to write is
logged once until a write succeeds again.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Callable

from vac.machine import stamped

log = logging.getLogger(__name__)

INTERVAL = 1.0        # seconds between writes, as the responder's heartbeat
MJF = "mjf-heartbeat"
METADATA = "metadata-heartbeat"


class ServiceHeartbeat:
    """One heartbeat file, written from the thread that serves."""

    def __init__(self, state_dir: str, name: str, clock: Callable[[], float] = time.time,
                 interval: float = INTERVAL):
        self.path = os.path.join(state_dir, name)
        self.clock = clock
        self.interval = interval
        self._last = float("-inf")
        self._failing = False
        self._lock = threading.Lock()

    def beat(self) -> None:
        """Write the file if INTERVAL has passed since the last write; never raises."""
        tick = time.monotonic()
        with self._lock:
            if tick - self._last < self.interval:
                return
            self._last = tick
        try:   # its time, mtime and ctime (which the original reads) name one second
            stamped.write(self.path, lambda second: f"{second}\n", stamped.now_for(self.clock))
        except OSError as e:
            if not self._failing:
                log.warning("%s not written: %s", os.path.basename(self.path), e)
            self._failing = True
            return
        if self._failing:
            log.info("%s written again", os.path.basename(self.path))
        self._failing = False
