# SPDX-License-Identifier: BSD-2-Clause
"""libvirt's domain lifecycle events: a domain that stops or shuts down ends its machine.

libvirt delivers events through an event loop the client runs: the default implementation is
registered once per process (virEventRegisterDefaultImpl) and run in this watcher's thread; a
connection of the watcher's own (read-only) registers for lifecycle events. A half-second
timer makes the loop come round so stop() is noticed. A closed connection (libvirtd
restarted) ends the watcher with an error: vacd falls back to cycles and starts a new one.
"""
from __future__ import annotations

import threading
from typing import Any

from vac.backends.watch import OnEnd, Watcher

_registered = threading.Lock()
_impl = [False]


def _register_event_impl(libvirt: Any) -> None:
    with _registered:
        if not _impl[0]:
            libvirt.virEventRegisterDefaultImpl()
            _impl[0] = True


class LibvirtWatcher(Watcher):
    backend = "libvirt"

    def __init__(self, uri: str, on_end: OnEnd):
        super().__init__(on_end)
        self.uri = uri
        self.closed = ""

    def loop(self) -> None:
        import libvirt

        _register_event_impl(libvirt)
        conn = libvirt.openReadOnly(self.uri)
        ending = (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN)

        def lifecycle(_conn, domain, event, _detail, _opaque) -> None:
            if event in ending:
                self.ended(domain.name())

        def on_close(_conn, reason, _opaque) -> None:
            self.closed = f"connection to {self.uri} closed (reason {reason})"

        callback = conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
                                               lifecycle, None)
        conn.registerCloseCallback(on_close, None)
        timer = libvirt.virEventAddTimeout(500, lambda *_: None, None)
        try:
            while not self.stopping.is_set() and not self.closed:
                libvirt.virEventRunDefaultImpl()
        finally:
            libvirt.virEventRemoveTimeout(timer)
            try:
                conn.domainEventDeregisterAny(callback)
                conn.close()
            except libvirt.libvirtError:
                pass
        if self.closed and not self.stopping.is_set():
            raise ConnectionError(self.closed)
