# SPDX-License-Identifier: BSD-2-Clause
"""A VM's serial console log: its bounded tail, read across virtlogd's rollovers.

The domain's serial console is a file chardev (<machine dir>/console.log); libvirt hands it to
virtlogd (stdio_handler = "logd", the default), which rolls it over at max_size (2 MB by
default) into console.log.0 (newest), console.log.1, ... (max_backups, 3 by default). The
guest writes all of it, so it is read as hostile: bounded, never through a symlink, never
blocking on something that is not a regular file.
"""
from __future__ import annotations

import logging
import os
import stat
from typing import List, Optional, Tuple

from vac.machine import joboutputs
from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)

CONSOLE_LOG = "console.log"
CONSOLE_READ_LIMIT = 8 * 1024 * 1024
CONSOLE_BACKUPS = 8          # more than virtlogd's default max_backups (3)


def read_console_tail(path: str, limit: int = CONSOLE_READ_LIMIT) -> List[str]:
    """The last `limit` bytes of a console log as lines (first partial line dropped), read
    across path.N ... path.0 and path, oldest first, so that lines printed before a rollover,
    or cut in two by it, are not lost."""
    names = [path] + [f"{path}.{n}" for n in range(CONSOLE_BACKUPS)]
    chunks: List[bytes] = []
    left, whole = limit, True
    for index, name in enumerate(names):
        found = _tail_bytes(name, left)
        if found is None:
            break
        data, size = found
        chunks.insert(0, data)
        left -= len(data)
        if size > len(data) or (left <= 0 and index + 1 < len(names)
                                and os.path.lexists(names[index + 1])):
            whole = False
            break
    if not chunks:
        return []
    lines = b"".join(chunks).decode("utf-8", errors="replace").split("\n")
    return lines if whole else lines[1:]


def _tail_bytes(path: str, count: int) -> Optional[Tuple[bytes, int]]:
    """(the last `count` bytes, the size) of a regular file; None if absent, a symlink or not
    a regular file (opened without blocking, so a FIFO cannot hang the cycle)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        os.lseek(fd, max(0, st.st_size - count), os.SEEK_SET)
        chunks, want = [], min(count, st.st_size)
        while want > 0:
            chunk = os.read(fd, min(want, 1024 * 1024))
            if not chunk:
                break
            chunks.append(chunk)
            want -= len(chunk)
        return b"".join(chunks), st.st_size
    finally:
        os.close(fd)


def store_joboutputs(directory: MachineDir, bounds: joboutputs.Bounds) -> List[str]:
    """Store the VAC-JOBOUTPUT lines of the machine's console.log within the bounds (a name
    already stored is kept); return the names stored."""
    found, rejected = joboutputs.parse_console(read_console_tail(directory.file(CONSOLE_LOG)),
                                               max_bytes=bounds.file_bytes,
                                               max_files=bounds.files)
    for reason in rejected[:5]:
        log.warning("%s: console joboutput rejected: %s", directory.name, reason)
    stored = []
    for name, body in found.items():
        try:
            if joboutputs.write_joboutput(directory.file("joboutputs"), name, body,
                                          max_bytes=bounds.file_bytes,
                                          max_total=bounds.total_bytes, max_files=bounds.files,
                                          replace=False):
                stored.append(name)
        except joboutputs.JoboutputRefused as e:
            log.warning("%s: console joboutput refused: %s", directory.name, e)
    if stored:
        log.info("%s: joboutputs from the console: %s", directory.name, " ".join(stored))
    return stored
