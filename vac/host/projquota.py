# SPDX-License-Identifier: BSD-2-Clause
"""Project quotas through the kernel's own interfaces: the one place Vac uses them.

A directory is given a project ID and the inherit flag (FS_XFLAG_PROJINHERIT) with the
FS_IOC_FSGETXATTR / FS_IOC_FSSETXATTR ioctls, so everything made under it is charged to that
project; the project's hard block limit is set and read with quotactl(2), Q_SETQUOTA and
Q_GETQUOTA of PRJQUOTA on the filesystem's block device, on XFS mounted with prjquota (or
pquota). Only XFS: it enforces a project's hard limit on every writer, root too, and gives
ENOSPC past it; ext4's project quotas give EDQUOT and do not bound a writer with
CAP_SYS_RESOURCE (vacd, root: its trial could not prove the limit). Both are called from Python
(fcntl.ioctl with struct, ctypes for quotactl), not through xfs_quota or setquota: the calls
are a few fixed-size structures, they need no parsing of a command's output, no /etc/projects,
and no tool installed. The ioctl numbers are those of the generic _IOC encoding (x86, arm,
arm64, riscv, s390); on powerpc, mips and sparc missing() says project quotas are not
supported.

Vac owns the project IDs FIRST_ID .. FIRST_ID + ID_COUNT - 1 and never sets or clears any other;
an admin's projects must lie outside that range.

    missing(path)           why project quotas cannot bound a directory under path, or ''
    Kernel().project(path)  a directory's (flags, project ID)
    Kernel().assign(path, id)  set its project ID and the inherit flag
    Kernel().usage(device, id)  (bytes used, inodes used, hard limit in bytes) of a project
    Kernel().limit(device, id, size)  set (0: clear) its hard block limit
    device(path)            the block device of the filesystem holding path, its type, options
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import struct
from typing import Optional, Set, Tuple

from vac.host import mountinfo as mountinfo_file

FIRST_ID = 0x56410000          # 1,447,100,416: "VA" then 16 bits, Vac's own project IDs
ID_COUNT = 0x10000
QUOTA_OPTIONS = frozenset({"prjquota", "pquota"})
FILESYSTEMS = ("xfs",)
MOUNTINFO = mountinfo_file.MOUNTINFO

FSXATTR = struct.Struct("=IIIII8x")          # xflags, extsize, nextents, projid, cowextsize
FS_IOC_FSGETXATTR = (2 << 30) | (FSXATTR.size << 16) | (ord("X") << 8) | 31
FS_IOC_FSSETXATTR = (1 << 30) | (FSXATTR.size << 16) | (ord("X") << 8) | 32
FS_XFLAG_PROJINHERIT = 0x200
GENERIC_IOC = ("x86_64", "i386", "i686", "aarch64", "armv7l", "armv6l", "riscv64", "s390x")

DQBLK = struct.Struct("=QQQQQQQQI4x")    # if_dqblk, padded to its 8-byte alignment
PRJQUOTA = 2
Q_GETQUOTA = 0x800007
Q_SETQUOTA = 0x800008
QIF_BLIMITS = 1
QUOTA_BLOCK = 1024                       # if_dqblk's block limits are in 1 KiB units


class QuotaError(OSError):
    """A project quota call failed (errno and the call in the message)."""


def qcmd(cmd: int, kind: int = PRJQUOTA) -> int:
    return ((cmd << 8) | (kind & 0xff)) - (1 << 32 if cmd & 0x800000 else 0)


class Kernel:
    """The ioctls and quotactl calls; tests inject a fake with the same methods."""

    def project(self, path: str) -> Tuple[int, int]:
        """(xflags, project ID) of the directory at path (not followed if a link)."""
        fd = _open_dir(path)
        try:
            got = fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size))
        finally:
            os.close(fd)
        flags, _, _, projid, _ = FSXATTR.unpack(got)
        return flags, projid

    def assign(self, path: str, projid: int) -> None:
        """Give the directory at path the project ID and the inherit flag."""
        fd = _open_dir(path)
        try:
            flags, extsize, nextents, _, cow = FSXATTR.unpack(
                fcntl.ioctl(fd, FS_IOC_FSGETXATTR, bytes(FSXATTR.size)))
            fcntl.ioctl(fd, FS_IOC_FSSETXATTR, FSXATTR.pack(
                flags | FS_XFLAG_PROJINHERIT, extsize, nextents, projid, cow))
        finally:
            os.close(fd)

    def usage(self, device: str, projid: int) -> Tuple[int, int, int]:
        """(bytes used, inodes used, hard limit in bytes, 0 for none) of the project; zeros
        for one the filesystem has no record of."""
        buf = ctypes.create_string_buffer(DQBLK.size)
        try:
            _quotactl(Q_GETQUOTA, device, projid, buf)
        except QuotaError as e:
            if e.errno == errno.ENOENT:     # XFS: no dquot of that ID on disk
                return 0, 0, 0
            raise
        hard, _, space, _, _, inodes, _, _, _ = DQBLK.unpack(buf.raw)
        return space, inodes, hard * QUOTA_BLOCK

    def limit(self, device: str, projid: int, size: int) -> None:
        """Set the project's hard (and soft: none) block limit to size bytes, rounded up to
        whole KiB; 0 clears it."""
        blocks = -(-max(0, size) // QUOTA_BLOCK)
        buf = ctypes.create_string_buffer(DQBLK.pack(blocks, 0, 0, 0, 0, 0, 0, 0, QIF_BLIMITS),
                                          DQBLK.size)
        _quotactl(Q_SETQUOTA, device, projid, buf)


def owned(projid: int) -> bool:
    """Is this project ID one of Vac's?"""
    return FIRST_ID <= projid < FIRST_ID + ID_COUNT


def _open_dir(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


_libc = None


def _quotactl(cmd: int, device: str, projid: int, buf: ctypes.Array) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.quotactl.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_void_p]
    if _libc.quotactl(qcmd(cmd), os.fsencode(device), ctypes.c_int(projid).value, buf) != 0:
        code = ctypes.get_errno()
        raise QuotaError(code, f"quotactl({cmd:#x}) of project {projid} on {device}: "
                               f"{os.strerror(code)}")


# The filesystem under a path ---------------------------------------------------------------

def device(path: str, mountinfo: str = MOUNTINFO) -> Tuple[str, str, Set[str]]:
    """(block device, filesystem type, mount and filesystem options) of the filesystem holding
    path, from mountinfo's line for its device number; ('', '', set()) if none says.

    Raises:
        OSError: path cannot be read.
    """
    st = os.stat(path)
    wanted = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    for fields in mountinfo_file.mounts(mountinfo):
        if len(fields) < 10 or fields[2] != wanted or "-" not in fields[6:]:
            continue
        dash = fields.index("-", 6)
        if len(fields) < dash + 3:
            continue
        options = set(fields[5].split(",")) | set(fields[dash + 3].split(",")
                                                    if len(fields) > dash + 3 else ())
        return fields[dash + 2], fields[dash + 1], options
    return "", "", set()


def missing(path: str, kernel: Optional[Kernel] = None, mountinfo: str = MOUNTINFO) -> str:
    """Why a directory under path cannot be bounded by a project quota here, or ''."""
    if platform.machine() not in GENERIC_IOC:
        return f"project quota ioctls not supported on {platform.machine()}"
    try:
        dev, fstype, options = device(path, mountinfo)
    except OSError as e:
        return f"cannot read {path}: {e.strerror or e}"
    if fstype not in FILESYSTEMS:
        return f"{path} is on {fstype or 'an unknown filesystem'}, not xfs"
    if not options & QUOTA_OPTIONS:
        return f"{path} is on {fstype} mounted without prjquota"
    if not dev.startswith("/dev/"):
        return f"{path} is on {fstype} with no block device ({dev})"
    try:
        (kernel or Kernel()).usage(dev, FIRST_ID)
    except OSError as e:
        return f"project quotas of {dev} cannot be read: {e.strerror or e}"
    return ""
