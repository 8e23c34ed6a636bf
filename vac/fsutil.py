# SPDX-License-Identifier: BSD-2-Clause
"""Filesystem primitives: atomic writes and bounded reads that never follow symlinks."""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from typing import Optional, Union

from vac.errors import StateError

DEFAULT_READ_LIMIT = 64 * 1024


def atomic_write(path: str, data: Union[str, bytes], mode: int = 0o644,
                 mtime: Optional[float] = None) -> None:
    """Write data to path through a temp file in the same directory and a rename.

    Args:
        mtime: if given, set atime and mtime of the new file (injected clocks use this).
    """
    directory = os.path.dirname(path) or "."
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.chmod(tmp, mode)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
    except BaseException:
        unlink_if_present(tmp)
        raise


def read_bytes_nofollow(path: str, limit: int = DEFAULT_READ_LIMIT) -> bytes:
    """Read at most `limit` bytes of a regular file, refusing symlinks and non-files.

    Raises:
        FileNotFoundError: the file does not exist.
        StateError: it is a symlink, not a regular file, or larger than `limit`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise
        if e.errno == errno.ELOOP:
            raise StateError(path, "is a symlink; refused") from e
        raise StateError(path, e.strerror or str(e)) from e
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise StateError(path, f"is a {_kind(st.st_mode)}, not a regular file; refused")
        if st.st_size > limit:
            raise StateError(path, f"is larger than {limit} bytes; refused")
        data = _read_up_to(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise StateError(path, f"is larger than {limit} bytes; refused")
    return data


def read_text_nofollow(path: str, limit: int = DEFAULT_READ_LIMIT) -> str:
    """Like read_bytes_nofollow, decoded as UTF-8 with replacement characters."""
    return read_bytes_nofollow(path, limit).decode("utf-8", errors="replace")


def read_optional(path: str, limit: int = DEFAULT_READ_LIMIT) -> Optional[str]:
    """The file's text, or None if it is absent or unsafe to read."""
    try:
        return read_text_nofollow(path, limit)
    except (FileNotFoundError, NotADirectoryError, StateError):
        return None


def mtime_or_none(path: str) -> Optional[float]:
    """mtime of path (not following a final symlink), or None if absent."""
    try:
        return os.lstat(path).st_mtime
    except (FileNotFoundError, NotADirectoryError):
        return None


def unlink_if_present(path: str) -> bool:
    """Remove a file (or link) if it is there; True if this call removed it. Other errors
    (a directory, no permission) are raised."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def touch(path: str, when: float) -> None:
    """Create path if needed (empty) and set its mtime to `when`."""
    if not os.path.lexists(path):
        atomic_write(path, b"", mtime=when)
    else:
        os.utime(path, (when, when), follow_symlinks=False)


def _read_up_to(fd: int, count: int) -> bytes:
    chunks = []
    while count > 0:
        chunk = os.read(fd, min(count, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def _kind(mode: int) -> str:
    """What a non-regular file is, in words for a log line."""
    for test, word in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISLNK, "symlink")):
        if test(mode):
            return word
    return "special file"
