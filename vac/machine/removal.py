# SPDX-License-Identifier: BSD-2-Clause
"""Removing what a guest may have shaped: machine directories and leftover temp files.

A guest controls what is under joboutputs/: a tree thousands of levels deep, symlinks
anywhere, names of any length. shutil.rmtree recurses (RecursionError) and builds full paths
(ENAMETOOLONG), so a directory is removed here without recursion and without long paths:
first renamed out of machines/ in one step (a half-removed directory can never be mistaken for
a machine), then emptied one directory at a time through descriptors, each subdirectory hoisted
up beside it by a rename, so no more than two descriptors are open and no path is longer than
two components. Symlinks are unlinked, never followed. The work per call is bounded; what is
left (names starting with REMOVING) is carried on by the next call.
"""
from __future__ import annotations

import errno
import itertools
import logging
import os
import re
from typing import List, Optional, Tuple

log = logging.getLogger(__name__)

REMOVING = ".removing-"
TEMP_RE = re.compile(r"\.tmp-[A-Za-z0-9_]{6,12}")   # tempfile.mkstemp(prefix=".tmp-") names
TEMP_MAX_AGE = 3600.0
DEFAULT_BUDGET = 200_000   # entries removed per call; the rest waits for the next cycle
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_serial = itertools.count()


def retire(path: str) -> str:
    """Rename a machine directory to `.removing-<name>` beside it, in one atomic step."""
    parent, name = os.path.split(path)
    target = os.path.join(parent, REMOVING + name)
    os.rename(path, target)
    return target


def remove_retired(parent: str, budget: int = DEFAULT_BUDGET) -> int:
    """Carry on removing every `.removing-*` entry of parent; return entries removed."""
    removed = 0
    for name in sorted(os.listdir(parent)):
        if name.startswith(REMOVING) and removed < budget:
            removed += _remove_under(parent, name, budget - removed)[0]
    return removed


def remove_tree(path: str, budget: int = DEFAULT_BUDGET) -> bool:
    """Retire path and remove it; True if it is gone, False if work is left for later."""
    parent = os.path.dirname(path)
    _, left = _remove_under(parent, os.path.basename(retire(path)), budget)
    return not left


def _remove_under(parent: str, name: str, budget: int) -> Tuple[int, bool]:
    """Empty and remove parent/name (a retired entry) and the subdirectories it hoists;
    return (entries removed, whether some are left for the next call)."""
    pfd = os.open(parent, _DIR_FLAGS)
    removed = 0
    queue: List[str] = [name]
    base = (name[len(REMOVING):] if name.startswith(REMOVING) else name)[:80]
    try:
        while queue and removed < budget:
            removed += _empty_one(pfd, queue.pop(), queue, budget - removed, base)
    finally:
        os.close(pfd)
    return removed, bool(queue)


def _empty_one(pfd: int, current: str, queue: List[str], budget: int, base: str) -> int:
    """Unlink the files of pfd/current, hoist its subdirectories into pfd, then rmdir it."""
    try:
        dfd = os.open(current, _DIR_FLAGS, dir_fd=pfd)
    except FileNotFoundError:
        return 0
    except OSError as e:
        if e.errno not in (errno.ENOTDIR, errno.ELOOP):
            raise
        os.unlink(current, dir_fd=pfd)        # a symlink or file under a retired name
        return 1
    removed = 0
    try:
        with os.scandir(dfd) as entries:
            for entry in entries:
                if removed >= budget:
                    break
                if entry.is_dir(follow_symlinks=False):
                    queue.append(_hoist(dfd, entry.name, pfd, base))
                else:
                    os.unlink(entry.name, dir_fd=dfd)
                removed += 1
    finally:
        os.close(dfd)
    if removed < budget:
        os.rmdir(current, dir_fd=pfd)
        return removed + 1
    queue.append(current)
    return removed


def _hoist(dfd: int, name: str, pfd: int, base: str) -> str:
    """Rename dfd/name to pfd/<a fresh retired name>, so its depth stops mattering."""
    while True:
        target = f"{REMOVING}{base}.{os.getpid()}.{next(_serial)}"
        try:
            os.rename(name, target, src_dir_fd=dfd, dst_dir_fd=pfd)
            return target
        except OSError as e:
            if e.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise


def sweep_temp_files(directory: str, now: float,
                     max_age: Optional[float] = TEMP_MAX_AGE) -> int:
    """Remove `.tmp-XXXXXX` files older than max_age (None: all of them) that a killed atomic
    write left behind."""
    swept = 0
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for entry in entries:
        if not TEMP_RE.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            old = max_age is None or now - st.st_mtime > max_age
            if old and not entry.is_dir(follow_symlinks=False):
                os.unlink(entry.path)
                swept += 1
        except FileNotFoundError:
            continue
    return swept
