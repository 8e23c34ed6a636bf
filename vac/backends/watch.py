# SPDX-License-Identifier: BSD-2-Clause
"""Watchers: a thread per backend that says at once when one of its machines ends.

vacd refills a slot as soon as its machine ends instead of at the next cycle. Each backend
that can tell (Docker's event stream, libvirt's lifecycle events, Apptainer's process exits)
returns a Watcher from Backend.watch(on_end); on_end(machine name) is called from the
watcher's thread and must only note the name and wake the daemon. A watcher that fails ends
with its error set; vacd then falls back to cycles for that backend, says so, and starts a
new watcher at a later cycle.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger(__name__)

OnEnd = Callable[[str], None]


class Watcher(threading.Thread):
    """Runs loop() in a daemon thread until stop(); a failure ends it with `error` set."""

    backend = "?"

    def __init__(self, on_end: OnEnd):
        super().__init__(name=f"vac-watch-{self.backend}", daemon=True)
        self.on_end = on_end
        self.stopping = threading.Event()
        self.error = ""

    def run(self) -> None:
        try:
            self.loop()
        except Exception as e:  # noqa: BLE001 - any failure means: fall back to cycles
            if not self.stopping.is_set():
                self.error = f"{type(e).__name__}: {e}"
                log.debug("%s watcher failed", self.backend, exc_info=True)
        if not self.stopping.is_set() and not self.error:
            self.error = "the event source ended"

    def loop(self) -> None:
        raise NotImplementedError

    def interrupt(self) -> None:
        """Make a blocked loop() return (close its stream); called by stop()."""

    def ended(self, name: str) -> None:
        if name and not self.stopping.is_set():
            self.on_end(name)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        try:
            self.interrupt()
        except Exception:  # noqa: BLE001 - stopping must not fail
            log.debug("%s watcher interrupt failed", self.backend, exc_info=True)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
