# SPDX-License-Identifier: BSD-2-Clause
"""The metadata service's note of a request it does not serve: one warning per (client, path),
naming the path and the machine, so that the next unknown client (a cloud-init datasource
asking for something Vac lacks) is a one-line diagnosis in vacd's log.

Guests are hostile: paths are shown escaped and cut to PATH_SHOWN characters, and at most
MAX_NOTED distinct requests are remembered (then one line says that further ones go unlogged),
so a guest walking random paths can neither flood the log nor grow vacd's memory.
"""
from __future__ import annotations

import logging
import threading
import unicodedata
from typing import Set, Tuple

log = logging.getLogger("vac.backends.libvirt.metadata")

MAX_NOTED = 512
PATH_SHOWN = 200


def shown(text: str) -> str:
    """A guest's text for a log line: control characters as \\xNN, cut to PATH_SHOWN."""
    cut = text[:PATH_SHOWN]
    clean = "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in cut)
    return clean + ("..." if len(text) > PATH_SHOWN else "")


class Unserved:
    """Remembers which unserved requests were already logged (thread-safe)."""

    def __init__(self, max_noted: int = MAX_NOTED) -> None:
        self.max_noted = max_noted
        self._noted: Set[Tuple[str, str]] = set()
        self._full = False
        self._lock = threading.Lock()

    def note(self, method: str, peer: str, machine: str, path: str, status: int) -> bool:
        """Log the request once; True if this call logged it."""
        key = (peer, path[:PATH_SHOWN])
        with self._lock:
            if key in self._noted:
                return False
            if len(self._noted) >= self.max_noted:
                if not self._full:
                    self._full = True
                    log.warning("metadata service: more than %d distinct unserved requests; "
                                "further ones are not logged", self.max_noted)
                return False
            self._noted.add(key)
        log.warning("metadata service does not serve %s %s for %s (%s): answered %d (logged "
                    "once per client and path)", method, shown(path), machine, peer, status)
        return True
