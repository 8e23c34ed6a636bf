# SPDX-License-Identifier: BSD-2-Clause
"""Each container machine's bounded scratch area: a filesystem of its own, mounted at /scratch.

A container machine whose machinetype (or [settings]) sets disk_gb_per_processor gets
disk_gb_per_processor x processors x 10^9 bytes of scratch. The mechanism is chosen per host,
best first (`vac doctor` names it and why the better ones are not used):

    lvm-thin  an ext4 filesystem on a thin LV of volume_group's thin pool (vac.host.lvm:
              the pool named vac_thin_pool, else the group's only one; Vac never makes a
              pool), named as the machine directory, mounted (nosuid, nodev, discard) at
              <state_dir>/scratch/<machine directory name> (vac.machine.scratchlv). Needs
              root, lvm2, a kernel with device-mapper, the pool, mkfs.ext4 and mount.
    loop      an ext4 filesystem made in a sparse file, loop-mounted (nosuid, nodev, discard)
              at the same mount point; the file is unlinked once mounted, so its blocks are
              freed when the last mount of it goes (and a reboot leaves nothing). Needs root,
              /dev/loop-control, mkfs.ext4 and mount.
    project-quota
              a plain directory at the same path on the state directory's own filesystem,
              given a project ID of Vac's (vac.host.projquota.FIRST_ID and the ID_COUNT after
              it) with the inherit flag and a hard block limit of the size
              (vac.machine.scratchquota). Needs root and, under <state_dir>/scratch, XFS
              mounted with prjquota (or pquota). Not ext4: its project quotas give EDQUOT,
              and do not bound root.
    none      the host can do none of them: the machine runs without a scratch area.

All are thin: nothing is reserved up front; writing past the size fails inside the scratch and
nowhere else: ENOSPC. The root of the scratch is mode 1777 (as /tmp), so the payload's user,
whoever it is, can write there. The scratch is removed when the machine's container is
destroyed, and by release_leftovers() for machines of this factory that are finished or whose
directory has gone (after a vacd restart), never another's. How one is made and dropped is a
Maker: Loop here, scratchlv.ThinVolume for an LV, scratchquota.ProjectQuota for a project
quota. A quota's directory is not a mount: remove() unmounts only what is mounted, and removes
the tree of a plain directory (never crossing a mount); used_bytes() reads its project's usage.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import dataclass
from typing import Callable, List, Optional, Protocol, Tuple

from vac import subp
from vac.errors import ProcessError, VacError
from vac.host import lvm, projquota
from vac.host import mountinfo as mountinfo_file
from vac.machine.directory import MachineDir
from vac.machine.slots import ordinal_of

log = logging.getLogger(__name__)

CONTAINER_PATH = "/scratch"        # where containers see their scratch area
MJF_KEY = "jobfeatures/scratch_limit_bytes"
POOL = "scratch"                   # <state_dir>/scratch: mount points (and files being made)
IMAGE_SUFFIX = ".img"
GB = 10 ** 9
MIN_BYTES = 16 * 1024 * 1024       # ext4 needs a few MiB for itself
TIMEOUT = 60.0
MOUNT_OPTIONS = "loop,nosuid,nodev,discard"
MKFS = ["mkfs.ext4", "-q", "-F", "-m", "0", "-O", "^has_journal", "-E",
        "nodiscard,lazy_itable_init=1", "-L", "vac-scratch"]
LVM_THIN = "lvm-thin"
LOOP = "loop"
QUOTA = "project-quota"
NONE = "none"
PoolFinder = Callable[[str], Tuple[Optional[str], str]]
QuotaProbe = Callable[[str], str]


class ScratchError(VacError):
    """A machine's scratch area could not be made or removed."""


@dataclass(frozen=True)
class Mechanism:
    """How this host gives machines their scratch: name (lvm-thin, loop, project-quota or
    none) and why;
    for lvm-thin the volume group and its thin pool."""

    name: str
    detail: str
    group: str = ""
    pool: str = ""


class Maker(Protocol):
    """How a mechanism makes a scratch (mounted at the pool's `name`; its mount point
    returned) and drops what it made besides the mount (True if there was something)."""

    def make(self, state_dir: str, name: str, size: int) -> str: ...

    def drop(self, name: str) -> bool: ...


class Loop:
    """The loop mechanism's maker: a sparse file's filesystem, nothing to drop after."""

    def make(self, state_dir: str, name: str, size: int) -> str:
        return _make(state_dir, name, size)

    def drop(self, name: str) -> bool:
        return False


# Choosing the mechanism ----------------------------------------------------------------

def choose(volume_group: Optional[str], which: Callable[[str], Optional[str]] = shutil.which,
           exists: Optional[Callable[[str], bool]] = None,
           euid: Callable[[], int] = os.geteuid,
           find_pool: PoolFinder = lvm.find_pool, state_dir: Optional[str] = None,
           quota_missing: QuotaProbe = projquota.missing) -> Mechanism:
    """The best mechanism this host has, with the reasons the better ones are passed over.
    exists: the test for /dev/loop-control and /dev/mapper/control (default: the first must
    exist, the second must open: lvm.device_mapper); quota_missing: why the filesystem under
    a path cannot bound a directory by a project quota, or '' (asked of the pool, or the
    state directory until the pool exists; not asked without a state_dir)."""
    pool, not_lvm = _thin_pool(volume_group, which, exists, find_pool,
                               _fs_missing(which, euid))
    if pool:
        return Mechanism(LVM_THIN, f"an ext4 filesystem on a thin LV per machine in "
                                   f"{volume_group}/{pool}", volume_group or "", pool)
    passed = [not_lvm]
    missing = _loop_missing(which, exists or os.path.exists, euid)
    if not missing:
        return Mechanism(LOOP, "an ext4 filesystem in a sparse file per machine, "
                               f"loop-mounted (not a thin LV: {passed[0]})")
    passed.append(f"not a loop-mounted file: {missing}")
    why = _quota_missing(state_dir, euid, quota_missing)
    if not why:
        return Mechanism(QUOTA, "a directory per machine bounded by a project quota on the "
                                f"state directory's filesystem ({'; '.join(passed)})")
    passed.append(f"not a project quota: {why}")
    return Mechanism(NONE, "; ".join(passed))


def _quota_missing(state_dir: Optional[str], euid: Callable[[], int],
                   probe: QuotaProbe) -> str:
    """Why the pool cannot hold project quota scratch directories, or ''."""
    if not state_dir:
        return "no state directory to look at"
    if euid() != 0:
        return "vacd is not root"
    return probe(pool(state_dir) if os.path.isdir(pool(state_dir)) else state_dir)


def _thin_pool(volume_group: Optional[str], which: Callable[[str], Optional[str]],
               exists: Optional[Callable[[str], bool]], find_pool: PoolFinder,
               missing: str) -> Tuple[Optional[str], str]:
    """(the thin pool scratch LVs go in, or None; why not). missing: why no filesystem can be
    made and mounted here ('' if it can)."""
    if not volume_group:
        return None, "no volume_group"
    why = lvm.missing(which, exists) or missing
    return (None, why) if why else find_pool(volume_group)


def _loop_missing(which: Callable[[str], Optional[str]], exists: Callable[[str], bool],
                  euid: Callable[[], int]) -> str:
    """Why loop mounts cannot work here, or ''."""
    return _fs_missing(which, euid) or (
        "" if exists("/dev/loop-control") else "no /dev/loop-control (loop module not loaded)")


def _fs_missing(which: Callable[[str], Optional[str]], euid: Callable[[], int]) -> str:
    """Why vacd cannot make and mount a scratch filesystem (on a file or an LV), or ''."""
    if euid() != 0:
        return "vacd is not root"
    absent = [p for p in ("mkfs.ext4", "mount", "umount") if not which(p)]
    return f"{' and '.join(absent)} not installed" if absent else ""


def limit_bytes(machinetype_gb: Optional[int], settings_gb: Optional[int],
                processors: int) -> Optional[int]:
    """The machine's scratch size (machinetype's disk_gb_per_processor beats the settings'),
    or None when neither is set."""
    per = machinetype_gb if machinetype_gb is not None else settings_gb
    if per is None:
        return None
    return max(MIN_BYTES, per * max(1, processors) * GB)


# One machine's scratch -------------------------------------------------------------------

def pool(state_dir: str) -> str:
    return os.path.join(state_dir, POOL)


def mount_point(state_dir: str, dir_name: str) -> str:
    return os.path.join(pool(state_dir), dir_name)


def create(state_dir: str, directory: MachineDir, size: int,
           maker: Optional[Maker] = None) -> str:
    """Make (with maker, Loop by default), mount and export the machine's scratch of `size`
    bytes (kept if this machine's is mounted already); return its mount point, for the
    backend to bind at CONTAINER_PATH.

    Raises:
        ScratchError: it could not be made (nothing of it is left behind).
    """
    maker = maker or Loop()
    name = os.path.basename(directory.path)
    target = mount_point(state_dir, name)
    if not is_mounted(target):      # mounted: a create() again for the same machine (adoption)
        maker.make(state_dir, name, size)
    try:
        directory.write(MJF_KEY, str(size))
    except OSError as e:
        remove(state_dir, name, maker)
        raise ScratchError(f"cannot write {MJF_KEY} of {directory.name}: {e}") from e
    log.info("%s: scratch of %d bytes mounted at %s", directory.name, size, target)
    return target


def trial(state_dir: str, maker: Optional[Maker] = None) -> int:
    """Make, fill past its end and remove a small scratch in the pool (vac doctor's proof
    that the mechanism works here); returns the bytes it took before ENOSPC.

    Raises:
        ScratchError: any step failed, or the write was not stopped at the size.
    """
    maker = maker or Loop()
    name = f".trial-{os.getpid()}"
    target = maker.make(state_dir, name, MIN_BYTES)
    written = 0
    try:
        with open(os.path.join(target, "fill"), "wb") as f:
            while written <= 2 * MIN_BYTES:
                f.write(b"\0" * 1048576)
                f.flush()
                written += 1048576
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise ScratchError(f"writing the trial scratch {target}: {e}") from e
    finally:
        remove(state_dir, name, maker)
    if written > MIN_BYTES:
        raise ScratchError(f"the trial scratch took {written} bytes, more than its {MIN_BYTES}")
    return written


def _make(state_dir: str, name: str, size: int) -> str:
    """The filesystem of `size` bytes mounted at the pool's `name` (a leftover replaced)."""
    target = mount_point(state_dir, name)
    remove(state_dir, name)
    os.makedirs(pool(state_dir), mode=0o711, exist_ok=True)
    image = target + IMAGE_SUFFIX
    try:
        os.mkdir(target, 0o700)
        _sparse(image, size)
        subp.run(MKFS + [image], timeout=TIMEOUT)
        subp.run(["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, image, target], timeout=TIMEOUT)
        os.chmod(target, 0o1777)
        os.unlink(image)
    except (OSError, ProcessError) as e:
        remove(state_dir, name)
        raise ScratchError(f"cannot make a {size}-byte scratch at {target}: {e}") from e
    return target


def _sparse(path: str, size: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.ftruncate(fd, size)
    finally:
        os.close(fd)


def remove(state_dir: str, dir_name: str, maker: Optional[Maker] = None) -> bool:
    """Unmount (if mounted) and remove the scratch of this machine directory name, with a
    maker what it made (an LV; a project quota's directory and limit) first; a plain
    directory's tree is removed too (never crossing a mount). True if there was one.

    Raises:
        ScratchError: it is mounted and stays so, or the maker's volume or tree stays.
    """
    target = mount_point(state_dir, dir_name)
    found = False
    if is_mounted(target):
        found = True
        _unmount(target)
    found = (maker.drop(dir_name) if maker is not None else False) or found
    for path, drop in ((target + IMAGE_SUFFIX, os.unlink), (target, _remove_dir)):
        try:
            drop(path)
            found = True
        except FileNotFoundError:
            pass
        except OSError as e:
            raise ScratchError(f"cannot remove {path}: {e}") from e
    return found


def _remove_dir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError as e:
        if e.errno != errno.ENOTEMPTY:
            raise
        remove_tree(path)


def remove_tree(path: str) -> None:
    """Remove the directory tree at path (symbolic links not followed), unless something is
    mounted in it; a tree that is not there counts as removed.

    Raises:
        ScratchError: something is mounted under it, or it stays.
    """
    beneath = [m for m in mounted() if m.startswith(path.rstrip(os.sep) + os.sep)]
    if beneath:
        raise ScratchError(f"not removing {path}: {beneath[0]} is mounted in it")
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise ScratchError(f"cannot remove {path}: {e}") from e


def unmount(target: str) -> None:
    """Unmount what is mounted at target (lazily if it is busy).

    Raises:
        ScratchError: it stays mounted.
    """
    _unmount(target)


def _unmount(target: str) -> None:
    try:
        subp.run(["umount", target], timeout=TIMEOUT)
    except ProcessError as e:
        log.warning("umount %s: %s; detaching it lazily", target, e)
        try:
            subp.run(["umount", "-l", target], timeout=TIMEOUT)
        except ProcessError as e2:
            raise ScratchError(f"cannot unmount {target}: {e2}") from e2


def is_mounted(path: str, mountinfo: str = mountinfo_file.MOUNTINFO) -> bool:
    """Is something mounted exactly at path (mountinfo's fifth field, octal escapes undone)?"""
    return path in mounted(mountinfo)


def mounted(mountinfo: str = mountinfo_file.MOUNTINFO) -> List[str]:
    return [mountinfo_file.unescape(fields[4]) for fields in mountinfo_file.mounts(mountinfo)
            if len(fields) > 4]


def mounts_of(device: int, mountinfo: str = mountinfo_file.MOUNTINFO) -> List[str]:
    """Where the block device numbered `device` (a stat's st_rdev) is mounted."""
    wanted = f"{os.major(device)}:{os.minor(device)}"
    return [mountinfo_file.unescape(fields[4]) for fields in mountinfo_file.mounts(mountinfo)
            if len(fields) > 4 and fields[2] == wanted]


def used_bytes(state_dir: str, dir_name: str) -> Optional[int]:
    """Bytes in use in the machine's scratch (a project quota's as the quota counts them),
    or None when it has none."""
    target = mount_point(state_dir, dir_name)
    if not is_mounted(target):
        found = quota_usage(state_dir, dir_name)
        return found[0] if found is not None else None
    try:
        st = os.statvfs(target)
    except OSError:
        return None
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def quota_usage(state_dir: str, dir_name: str, kernel: Optional[projquota.Kernel] = None,
                device: Optional[str] = None) -> Optional[Tuple[int, int]]:
    """(bytes used, hard limit in bytes) of the machine's project quota scratch, or None when
    there is no directory with a project ID of Vac's (statvfs would not do: XFS shows a
    project's limit there only when it is below the filesystem's size). device: the block
    device of the pool's filesystem, if the caller has it (else read from mountinfo)."""
    kernel = kernel or projquota.Kernel()
    target = mount_point(state_dir, dir_name)
    try:
        _, projid = kernel.project(target)
        if not projquota.owned(projid):
            return None
        device = device or projquota.device(target)[0]
        if not device.startswith("/dev/"):
            return None
        used, _, limit = kernel.usage(device, projid)
    except OSError:
        return None
    return used, limit


def free_bytes(state_dir: str) -> int:
    """Free bytes (for unprivileged users, as df shows) where the pool's files grow."""
    where = pool(state_dir) if os.path.isdir(pool(state_dir)) else state_dir
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


# Leftovers -------------------------------------------------------------------------------

def release_leftovers(state_dir: str, factory_name: str,
                      maker: Optional[Maker] = None) -> List[str]:
    """Remove the scratch of every machine of this factory whose directory is finished or has
    gone (a vacd stopped or killed before destroy removed it), through `maker` when given (a
    project quota's, whose limits are cleared). Returns those directory names. Another
    factory's scratch, and a living machine's, are left alone."""
    released = []
    try:
        names = sorted(os.listdir(pool(state_dir)))
    except FileNotFoundError:
        return []
    machines = os.path.join(state_dir, "machines")
    for entry in names:
        name = entry[:-len(IMAGE_SUFFIX)] if entry.endswith(IMAGE_SUFFIX) else entry
        parts = name.split("_")
        if len(parts) != 3 or not parts[0].isdigit() or ordinal_of(factory_name, parts[2]) < 0:
            continue
        path = os.path.join(machines, name)
        if os.path.isdir(path) and not os.path.lexists(os.path.join(path, "finished")):
            continue
        try:
            if remove(state_dir, name, maker) and name not in released:
                log.warning("%s: removed the scratch a finished machine left", name)
                released.append(name)
        except ScratchError as e:
            log.warning("%s: %s", name, e)
    return released

