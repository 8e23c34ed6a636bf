# SPDX-License-Identifier: BSD-2-Clause
"""One vacd per state directory: an exclusive flock on <state_dir>/vacd.lock held for life.

The lock is on an open file description (flock), opened close-on-exec, so machines and helper
processes vacd starts never inherit it and it goes away with vacd, however vacd ends. The file
holds the holder's pid for the message a second vacd prints; it is written in place (not through
atomic_write) because a rename would put a new, unlocked inode under the name.
"""
from __future__ import annotations

import errno
import fcntl
import os
import time
from typing import Optional, Sequence

from vac.config import options as O
from vac.config import presence
from vac.config.load import read_raw
from vac.errors import ConfigError, VacError
from vac.paths import Paths

LOCK_NAME = "vacd.lock"
MAX_PID_BYTES = 32
STRAGGLER_WAIT_SECONDS = 2.0


class LockHeld(VacError):
    """Another process holds the state directory's lock."""

    def __init__(self, path: str, pid: Optional[int]):
        self.path = path
        self.pid = pid
        who = f"pid {pid}" if pid else "another process"
        super().__init__(f"another vacd ({who}) holds {path}: only one vacd may run on a state "
                         "directory; stop it first (systemctl stop vacd) or give this one its "
                         "own state_dir")


def state_dir_of(files: Sequence[str]) -> str:
    """The state_dir the configuration names (read without pipes), else the default (which is
    what no configuration, or one without state_dir, means).

    Raises:
        ConfigMissing: a file in `files` does not exist (only a --config file can be named and
            missing: the default files are listed only when they exist); never a fallback to
            the default state directory for a configuration that is not there.
    """
    presence.require_named(files)
    default = O.by_name(O.SETTINGS_OPTIONS)["state_dir"].default
    try:
        value, _ = read_raw(files).section("settings").get("state_dir", ("", ""))
    except ConfigError:
        return default  # vacd reports the configuration's problems in its first cycle
    return value or default


def lock_path(state_dir: str) -> str:
    return os.path.join(Paths(state_dir).state_dir, LOCK_NAME)


class StateLock:
    """The lock; `acquire` raises LockHeld at once when another process has it."""

    def __init__(self, state_dir: str):
        self.path = lock_path(state_dir)
        self.fd: Optional[int] = None

    def acquire(self) -> StateLock:
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as e:  # a symlink (ELOOP), a read-only or foreign state directory
            raise VacError(f"cannot open the lock {self.path}: {e.strerror}") from e
        try:
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def _lock(self, fd: int) -> None:
        """flock at once; while the pid in the file is dead, wait a little: a child of a vacd
        that was just killed may hold the descriptor between its fork and its exec."""
        deadline = time.monotonic() + STRAGGLER_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise VacError(f"cannot lock {self.path}: {e.strerror}") from e
            pid = holder_pid(self.path)
            if (pid and _alive(pid)) or time.monotonic() >= deadline:
                raise LockHeld(self.path, pid)
            time.sleep(0.05)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_pid(path: str, wait: float = 0.5) -> Optional[int]:
    """The pid written in a held lock file (the holder writes it just after locking)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                text = os.read(fd, MAX_PID_BYTES).decode("ascii", "replace").strip()
            finally:
                os.close(fd)
        except OSError:
            text = ""
        if text.isdigit():
            return int(text)
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def is_held(state_dir: str) -> Optional[int]:
    """For `vac doctor`: the holder's pid if a vacd holds the lock, else None."""
    path = lock_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return holder_pid(path) or -1
    finally:
        os.close(fd)
    return None
