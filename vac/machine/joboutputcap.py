# SPDX-License-Identifier: BSD-2-Clause
"""A container machine's joboutputs/ capped, as a VM's are over HTTP: a small file system of
its own while the machine runs, its files copied back into the plain directory when the
machine is removed.

make() mounts an ext4 of joboutputs_machine_mb MiB, made in a sparse file in the scratch pool
(the scratch's mechanism: loop, nosuid, nodev; the file unlinked once mounted, so nothing is
reserved up front), over <machine directory>/joboutputs, with the directory's owner and mode.
The container binds that path, so the payload writes into the small file system and gets
ENOSPC at its end; vacd's readers (shutdown_message, the heartbeat file, the status page) read
it where it always was. RESERVE bytes of it are reserved for a user id drawn at random per
machine (tune2fs -u): a payload cannot use them (it has neither that id, which it cannot learn,
nor CAP_SYS_RESOURCE, which no engine gives by default), while vacd, root with that
capability, can always write its own shutdown_message there at the end.

release() copies the files back when the machine is removed (regular files and directories;
symbolic links as links, never followed; anything else, and what lies more than MAX_DEPTH deep
or past MAX_ENTRIES, left out), unmounts, and moves them into the plain directory. A copy that
was interrupted (vacd killed) is completed by the next release(). A reboot loses the mounted
files of running machines (as it loses the machines).
"""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import stat
from typing import List, Optional, Tuple

from vac import subp
from vac.errors import ProcessError
from vac.machine import scratch
from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)

NAME = "joboutputs"
SAVED = ".joboutputs.saved"
SUFFIX = ".joboutputs.img"
BLOCK = 4096
RESERVE = 1024 * 1024          # bytes kept for vacd's own writes
MAX_DEPTH = 16
MAX_ENTRIES = 10000
_said: List[bool] = []
MKFS = ["mkfs.ext4", "-q", "-F", "-b", str(BLOCK), "-O", "^has_journal", "-E",
        "nodiscard,lazy_itable_init=1", "-L", "vac-joboutputs"]


def make(state_dir: str, directory: MachineDir, size: int) -> Optional[str]:
    """Mount the machine's capped joboutputs (kept if mounted already); its path, or None
    when the host has no tune2fs to reserve vacd's blocks with (said once in the log: the
    machine's joboutputs are then not capped).

    Raises:
        ScratchError: it could not be made (the plain directory is left as it was).
    """
    target = directory.file(NAME)
    if scratch.is_mounted(target):
        return target
    if not shutil.which("tune2fs"):
        if not _said:
            _said.append(True)
            log.warning("tune2fs (e2fsprogs) is not installed: container machines' "
                        "joboutputs are not capped")
        return None
    before = os.stat(target, follow_symlinks=False)
    if not stat.S_ISDIR(before.st_mode) or os.listdir(target):
        raise scratch.ScratchError(f"{target} is not an empty directory")
    image = os.path.join(scratch.pool(state_dir), os.path.basename(directory.path) + SUFFIX)
    os.makedirs(scratch.pool(state_dir), mode=0o711, exist_ok=True)
    try:
        _sparse(image, max(scratch.MIN_BYTES, size + RESERVE))
        subp.run(MKFS + [image], timeout=scratch.TIMEOUT)
        subp.run(["tune2fs", "-u", str(_reserved_uid()), "-r", str(RESERVE // BLOCK), image],
                 timeout=scratch.TIMEOUT)
        subp.run(["mount", "-t", "ext4", "-o", scratch.MOUNT_OPTIONS, image, target],
                 timeout=scratch.TIMEOUT)
        os.rmdir(os.path.join(target, "lost+found"))
        os.chown(target, before.st_uid, before.st_gid)
        os.chmod(target, stat.S_IMODE(before.st_mode))
    except (OSError, ProcessError) as e:
        _undo(target)
        raise scratch.ScratchError(f"cannot cap {target} at {size} bytes: {e}") from e
    finally:
        _unlink(image)
    return target


def release(directory: MachineDir) -> bool:
    """Copy the capped joboutputs back into the plain directory and unmount it (or finish a
    copy that was interrupted); True if there was something to do.

    Raises:
        ScratchError: it stays mounted.
    """
    target, saved = directory.file(NAME), directory.file(SAVED)
    mounted = scratch.is_mounted(target)
    if not mounted and not os.path.isdir(saved):
        return False
    if mounted:
        if not os.path.isdir(saved):
            skipped = _copy(target, saved + ".new", 0, [0])
            os.rename(saved + ".new", saved)
            if skipped:
                log.warning("%s: %d joboutputs entries not kept (not files, directories or "
                            "links, or too many or too deep)", directory.name, skipped)
        scratch.unmount(target)
    for entry in os.listdir(saved):
        os.replace(os.path.join(saved, entry), os.path.join(target, entry))
    shutil.rmtree(saved)
    return True


def _copy(source: str, dest: str, depth: int, count: List[int]) -> int:
    """Copy the tree (files, directories, links as links); the entries left out."""
    if os.path.isdir(dest):
        shutil.rmtree(dest)   # a copy interrupted before it was complete
    os.mkdir(dest, 0o755)
    skipped = 0
    for entry in os.scandir(source):
        count[0] += 1
        path, to = entry.path, os.path.join(dest, entry.name)
        if count[0] > MAX_ENTRIES:
            skipped += 1
        elif entry.is_symlink():
            os.symlink(os.readlink(path), to)
        elif entry.is_dir(follow_symlinks=False) and depth < MAX_DEPTH:
            skipped += _copy(path, to, depth + 1, count)
        elif entry.is_file(follow_symlinks=False):
            shutil.copyfile(path, to, follow_symlinks=False)
            shutil.copystat(path, to, follow_symlinks=False)
            os.chmod(to, stat.S_IMODE(os.lstat(to).st_mode) & 0o777)
        else:
            skipped += 1
    shutil.copystat(source, dest, follow_symlinks=False)
    return skipped


def mounted_in(state_dir: str, mounts: List[str]) -> List[Tuple[str, str]]:
    """(machine directory name, its path) of every capped joboutputs mounted in the state
    directory's machines/."""
    machines = os.path.join(state_dir, "machines") + os.sep
    found = []
    for path in mounts:
        head, tail = os.path.split(path)
        if tail == NAME and head.startswith(machines) and os.sep not in head[len(machines):]:
            found.append((os.path.basename(head), head))
    return found


def _reserved_uid() -> int:
    """A user id no payload runs as: drawn at random above the ids sites give out."""
    return 2 ** 30 + secrets.randbelow(2 ** 30)


def _sparse(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def _undo(target: str) -> None:
    if scratch.is_mounted(target):
        try:
            scratch.unmount(target)
        except scratch.ScratchError as e:
            log.warning("%s", e)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
