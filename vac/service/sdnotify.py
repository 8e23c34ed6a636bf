# SPDX-License-Identifier: BSD-2-Clause
"""systemd's notify protocol (sd_notify(3)) with the standard library: one datagram of
"KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or an abstract name
written with a leading "@"). Without $NOTIFY_SOCKET (not run by systemd, or Type=simple) every
call does nothing. A failed send is never an error for vacd: the service goes on, and systemd
is the one that notices a missing READY=1 or WATCHDOG=1.

The watchdog: systemd sets $WATCHDOG_USEC (and $WATCHDOG_PID, the process meant) when the unit
has WatchdogSec=; the process must send WATCHDOG=1 more often than that, or systemd kills and
restarts it (Restart=on-failure counts a watchdog timeout as a failure). WatchdogPinger sends it from a
thread of its own while the main loop keeps ticking: a cycle may legitimately take minutes
(every backend call has its timeout), so the pings stop only when the main loop has not ticked
for `stall_seconds`; a stopped process (SIGSTOP) or a dead interpreter sends nothing at all.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from typing import Callable, Mapping, Optional

MAX_STATUS = 1000   # characters of STATUS= kept (systemctl status shows one line)


def _address(env: Mapping[str, str]) -> Optional[str]:
    name = env.get("NOTIFY_SOCKET", "")
    if not name or name[0] not in "/@":   # only paths and abstract names (not vsock:...)
        return None
    return "\0" + name[1:] if name[0] == "@" else name


def one_line(text: str) -> str:
    """A STATUS= value: one line (newlines would end the field), bounded."""
    return " ".join(text.split())[:MAX_STATUS]


class Notifier:
    """Sends notifications to the service manager; does nothing outside systemd."""

    def __init__(self, env: Optional[Mapping[str, str]] = None):
        env = os.environ if env is None else env
        self.address = _address(env)
        self.watchdog_seconds = _watchdog_seconds(env)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: str) -> bool:
        """Send the fields (ready="1" -> READY=1); True if the datagram was sent."""
        if self.address is None or not fields:
            return False
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(2.0)
                sock.sendto(message.encode("utf-8", "replace"), self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify(ready="1", status=one_line(status))

    def status(self, status: str) -> bool:
        return self.notify(status=one_line(status))

    def watchdog(self) -> bool:
        return self.notify(watchdog="1")

    def stopping(self, status: str) -> bool:
        return self.notify(stopping="1", status=one_line(status))


def _watchdog_seconds(env: Mapping[str, str]) -> Optional[float]:
    """The watchdog interval systemd asks for, if it is meant for this process."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 1e6


class WatchdogPinger:
    """Sends WATCHDOG=1 every third of the interval while the main loop ticks."""

    def __init__(self, notifier: Notifier, stall_seconds: float,
                 clock: Callable[[], float] = time.monotonic):
        self.notifier = notifier
        self.stall_seconds = stall_seconds
        self.clock = clock
        self.last_tick = clock()
        self.stopping = threading.Event()
        self.thread: Optional[threading.Thread] = None

    def tick(self) -> None:
        """The main loop is alive (called at each turn of vacd's loop)."""
        self.last_tick = self.clock()

    def beat(self) -> bool:
        """One ping if the main loop is not stalled; True if sent."""
        if self.clock() - self.last_tick > self.stall_seconds:
            return False
        return self.notifier.watchdog()

    def start(self) -> None:
        interval = self.notifier.watchdog_seconds
        if interval is None or not self.notifier.enabled:
            return
        self.thread = threading.Thread(target=self._run, args=(interval / 3.0,),
                                       name="sd-watchdog", daemon=True)
        self.thread.start()

    def _run(self, every: float) -> None:
        while not self.stopping.is_set():
            self.beat()
            self.stopping.wait(every)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout=5)
