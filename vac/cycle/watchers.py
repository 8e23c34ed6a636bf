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
import time
from typing import Callable, Dict, Optional, Set

from vac.backends.watch import OnEnd, Watcher
from vac.config.model import Config
from vac.cycle.backendpool import BackendPool
from vac.machine.directory import unfinished_machines

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


class MessageWatcher(Watcher):
    """A machine that wrote its shutdown_message and still runs ends when the grace of its
    machinetype (shutdown_message_grace_seconds) is over: a cheap poll, once a second, of the
    joboutputs/shutdown_message of each running machine of such a machinetype."""

    backend = "shutdown_message"
    PERIOD = 1.0

    def __init__(self, config: Callable[[], Optional[Config]], on_end: OnEnd,
                 clock: Callable[[], float] = time.time):
        super().__init__(on_end)
        self.config = config
        self.clock = clock
        self.reported: Set[str] = set()    # machine directories already reported

    def loop(self) -> None:
        while not self.stopping.wait(self.PERIOD):
            config = self.config()
            if config is not None:
                self.look(config)

    def look(self, config: Config) -> None:
        graces = {n: mt.shutdown_message_grace_seconds for n, mt in config.machinetypes.items()
                  if mt.shutdown_message_grace_seconds is not None}
        if not graces:
            return
        now = self.clock()
        current: Set[str] = set()
        for name, record, directory in unfinished_machines(config.settings.paths):
            if record.machinetype not in graces:
                continue
            current.add(directory.path)
            if directory.path in self.reported:
                continue
            written = directory.shutdown_message_time
            if written is not None and now >= written + graces[record.machinetype]:
                self.reported.add(directory.path)
                self.ended(name)
        self.reported &= current
