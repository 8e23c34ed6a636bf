# SPDX-License-Identifier: BSD-2-Clause
"""vacd's watchers: one per available backend, each saying at once when a machine ends.

The names they report are collected here and the daemon is woken (wake()); the daemon then
runs Factory.refill for them. After each full cycle ensure() starts a watcher for every
available backend that has none, and one that broke is reported once ("falling back to
cycles") and replaced at a later cycle, so a broken event source costs refill speed only.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable, Dict, Set

from vac.backends.watch import Watcher
from vac.cycle.backendpool import BackendPool

log = logging.getLogger(__name__)


class Watchers:
    def __init__(self, wake: Callable[[], None]):
        self.wake = wake
        self.running: Dict[str, Watcher] = {}
        self.broken: Set[str] = set()
        self._pending: Set[str] = set()
        self._lock = threading.Lock()

    def on_end(self, name: str) -> None:
        """Called from a watcher's thread: note the machine, wake the daemon."""
        with self._lock:
            self._pending.add(name)
        self.wake()

    def pending(self, names: Set[str]) -> None:
        """Have these slots refilled at the next wake-up (a retry)."""
        with self._lock:
            self._pending |= names

    def take(self) -> Set[str]:
        with self._lock:
            names, self._pending = self._pending, set()
        return names

    def ensure(self, pool: BackendPool) -> None:
        for name, watcher in list(self.running.items()):
            if watcher.is_alive() and name in self.broken:   # alive since the last cycle
                self.broken.discard(name)
                log.info("%s event watcher is back: machines are refilled as they end", name)
            elif not watcher.is_alive():
                del self.running[name]
                if name not in self.broken:
                    self.broken.add(name)
                    log.warning("%s event watcher stopped (%s): falling back to cycles for "
                                "its machines until it is back", name, watcher.error)
        for name, probe in sorted(pool.probed().items()):
            if not probe.available or name in self.running:
                continue
            try:
                watcher = pool.get(name).watch(self.on_end)
            except Exception as e:  # noqa: BLE001 - no watcher means cycles, not a failure
                log.warning("%s event watcher cannot start: %s", name, e)
                continue
            if watcher is not None:
                self.running[name] = watcher

    def stop(self) -> None:
        for watcher in self.running.values():
            watcher.stop()
        self.running.clear()
