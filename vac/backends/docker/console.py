# SPDX-License-Identifier: BSD-2-Clause
"""A finished Docker machine's console: the last CONSOLE_LIMIT bytes of its container's log."""
from __future__ import annotations

import contextlib
import time
from typing import Any

from vac.machine.directory import MachineDir

CONSOLE_LIMIT = 64 * 1024
CONSOLE_TAIL_ENTRIES = 8192


def save(api: Any, container_id: str, directory: MachineDir, timeout: float) -> None:
    """The last CONSOLE_LIMIT bytes of the container's log -> console.log (atomic), read for
    at most `timeout` seconds. The caller turns the engine's exceptions into Vac's."""
    kept = bytearray()
    deadline = time.monotonic() + timeout
    stream = api.logs(container_id, stdout=True, stderr=True, stream=True, follow=False,
                      tail=CONSOLE_TAIL_ENTRIES)
    try:
        for chunk in stream:
            kept += chunk
            if len(kept) > 2 * CONSOLE_LIMIT:
                del kept[:-CONSOLE_LIMIT]
            if time.monotonic() > deadline:
                break
    finally:
        with contextlib.suppress(Exception):
            stream.close()
    directory.write("console.log", bytes(kept[-CONSOLE_LIMIT:]))
