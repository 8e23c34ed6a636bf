# SPDX-License-Identifier: BSD-2-Clause
"""A container machine's scratch as a directory bounded by a project quota (the quota
mechanism of vac.machine.scratch, chosen when neither a thin LV nor a loop mount can be made).

ProjectQuota is its maker (vac.machine.scratch.Maker): the scratch is the plain directory
<state_dir>/scratch/<machine directory name> on the state directory's own filesystem (XFS
mounted with prjquota or pquota), mode 1777, given a project ID of its own with the inherit flag
(so all under it is charged to it), and a hard block limit of the scratch's size. Writing past
it is ENOSPC, for root too. Nothing is reserved up front. The kernel calls are vac.host.projquota's.

The project ID is allocated, not derived: the search starts at a hash of the directory name
within Vac's range (projquota.FIRST_ID, ID_COUNT) and takes the first ID that no directory in
the pool holds and whose quota charges nothing (no inode: no directory or file anywhere on the
filesystem has it), under a lock file in the pool, so two makers never take one ID. An ID is
kept in the directory itself (its fsxattr), so nothing else records it, and an ID outside the
range is never set or cleared. A directory of the name that already has an ID of Vac's is the
same machine's (adoption after a restart): it is kept and its limit set again.

drop() removes the directory's tree (never crossing a mount) and then clears its project's
limit. The plain directory is not a mount: scratch.remove() finds nothing mounted there, drops
through the maker, and removes a leftover directory's tree itself when called without one
(its limit then stays set on an ID that charges nothing, and is set anew when the ID is taken).

bound() gives another directory on the same filesystem an ID and a limit the same way: a
machine's joboutputs/ (vac.machine.joboutputquota).
"""
from __future__ import annotations

import errno
import fcntl
import logging
import os
import zlib
from typing import Optional, Set

from vac.host import projquota
from vac.machine import scratch

log = logging.getLogger(__name__)

LOCK = ".projquota.lock"


class ProjectQuota:
    """Makes scratch directories bounded by project quotas in state_dir's pool; `kernel` makes
    the ioctl and quotactl calls, `device` names the pool's block device (both injectable)."""

    def __init__(self, state_dir: str, kernel: Optional[projquota.Kernel] = None,
                 device: Optional[str] = None):
        self.state_dir = state_dir
        self.kernel = kernel or projquota.Kernel()
        self._device = device

    def device(self) -> str:
        """The pool's block device, as mountinfo names it.

        Raises:
            OSError: none is named (a missing device would look like an unused ID).
        """
        if not self._device:
            found = projquota.device(scratch.pool(self.state_dir))[0]
            if not found.startswith("/dev/"):
                raise OSError(errno.ENODEV, f"no block device holds {scratch.pool(self.state_dir)}")
            self._device = found
        return self._device

    def make(self, state_dir: str, name: str, size: int) -> str:
        """The directory bounded at `size` bytes (a leftover of the name without an ID of
        Vac's replaced; one with such an ID kept, its limit set again).

        Raises:
            ScratchError: a step failed (the directory is removed again).
        """
        target = scratch.mount_point(state_dir, name)
        kept = self.project_of(target)
        if kept is None:
            scratch.remove(state_dir, name)
            os.makedirs(scratch.pool(state_dir), mode=0o711, exist_ok=True)
        try:
            if kept is None:
                os.mkdir(target, 0o700)
                kept = self._allocate(target, name)
            self.kernel.limit(self.device(), kept, size)
            os.chmod(target, 0o1777)
        except OSError as e:
            self._undo(state_dir, name)
            raise scratch.ScratchError(f"cannot make a {size}-byte project quota scratch at "
                                       f"{target}: {e}") from e
        return target

    def bound(self, path: str, size: int) -> int:
        """Bound the existing directory at path (elsewhere on the pool's filesystem: a
        machine's joboutputs) to size bytes with an ID of Vac's of its own, kept if it has one
        already; the ID.

        Raises:
            ScratchError: it could not be bounded (the directory is left as it was).
        """
        try:
            projid = self.project_of(path)
            if projid is None:
                os.makedirs(scratch.pool(self.state_dir), mode=0o711, exist_ok=True)
                projid = self._allocate(path, path)
            self.kernel.limit(self.device(), projid, size)
        except OSError as e:
            raise scratch.ScratchError(f"cannot bound {path} at {size} bytes with a project "
                                       f"quota: {e}") from e
        return projid

    def drop(self, name: str) -> bool:
        """Remove the directory `name` with an ID of Vac's and clear its limit; False if
        there is none such (anything else at the name is scratch.remove()'s).

        Raises:
            ScratchError: the tree or the limit stays.
        """
        target = scratch.mount_point(self.state_dir, name)
        projid = self.project_of(target)
        if projid is None:
            return False
        scratch.remove_tree(target)
        try:
            self.kernel.limit(self.device(), projid, 0)
        except OSError as e:
            raise scratch.ScratchError(f"cannot clear the project quota {projid} of "
                                       f"{target}: {e}") from e
        return True

    def project_of(self, path: str) -> Optional[int]:
        """The project ID of Vac's the directory at path has, else None."""
        try:
            _, projid = self.kernel.project(path)
        except OSError:
            return None
        return projid if projquota.owned(projid) else None

    def _allocate(self, target: str, name: str) -> int:
        """Give target the first free ID of Vac's from the name's hash (a scratch's name, or
        another directory's path); the ID."""
        pool = scratch.pool(self.state_dir)
        fd = os.open(os.path.join(pool, LOCK), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = self._held(pool, os.path.basename(target))
            start = zlib.crc32(name.encode("utf-8", "surrogateescape")) % projquota.ID_COUNT
            for step in range(projquota.ID_COUNT):
                projid = projquota.FIRST_ID + (start + step) % projquota.ID_COUNT
                if projid not in held and self.kernel.usage(self.device(), projid)[1] == 0:
                    self.kernel.assign(target, projid)
                    return projid
        finally:
            os.close(fd)
        raise OSError(f"all {projquota.ID_COUNT} project IDs of Vac's are in use")

    def _held(self, pool: str, besides: str) -> Set[int]:
        """The IDs of Vac's the pool's other directories hold."""
        held = set()
        for entry in os.listdir(pool):
            projid = self.project_of(os.path.join(pool, entry)) if entry != besides else None
            if projid is not None:
                held.add(projid)
        return held

    def _undo(self, state_dir: str, name: str) -> None:
        """What a failed make left, removed; a failure here is logged, the make's own error
        is the one raised."""
        try:
            scratch.remove(state_dir, name, self)
        except scratch.ScratchError as e:
            log.warning("%s: %s", name, e)

