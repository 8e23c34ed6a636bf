# SPDX-License-Identifier: BSD-2-Clause
"""A container's own cgroup2 mount made writable, when that is safe (Docker).

A container started with a private cgroup namespace (Docker's default on cgroup v2) has
cgroup2 mounted read-only at /sys/fs/cgroup, rooted at its own cgroup. Making that mount
writable hands the container its subtree and nothing else, when:

    the host's cgroup2 at /sys/fs/cgroup is mounted `nsdelegate`: the kernel then refuses,
        from inside a cgroup namespace, writes to every file of the namespace's root except
        the delegation files (cgroup.procs, cgroup.subtree_control, cgroup.threads...), so the
        container can neither raise its own limits nor cgroup.kill or freeze itself;
    the container's cgroup namespace is not the host's (else its mount shows the whole tree);
    the container's /sys/fs/cgroup is a cgroup2 mount of its namespace's root, its own
        cgroup (mountinfo read from the host shows a cgroup2 mount's root as a path in the
        host's namespace: the container's cgroup, not "/").

The mount is remounted with MS_REMOUNT|MS_BIND (the mount's own flags), and if the
namespace's cgroup2 superblock is read-only too, with MS_REMOUNT: that reconfigures the
superblock, which from the host's cgroup namespace would also reset the hierarchy's mount
options (nsdelegate...) for the whole host, so the helper enters the container's cgroup
namespace first (the kernel leaves the options alone from any other). The helper is a process
of the host's Python that enters the container's cgroup and mount namespaces with setns(2)
and calls mount(2) itself: nothing of the container's filesystem is ever executed.
"""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from vac import fsutil, subp
from vac.errors import ProcessError, VacError
from vac.host import cgroups

POINT = "/sys/fs/cgroup"
TIMEOUT_SECONDS = 20.0
MOUNTINFO_LIMIT = 1024 * 1024

# Run as `python3 -I -S -c SCRIPT PID`: the host's interpreter, everything loaded before setns.
SCRIPT = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def fail(what):
    sys.exit(what + ": " + os.strerror(ctypes.get_errno()))
def enter(kind, flag):
    fd = os.open("/proc/%d/ns/%s" % (int(sys.argv[1]), kind), os.O_RDONLY | os.O_CLOEXEC)
    if libc.setns(fd, flag) != 0:
        fail("setns " + kind)
enter("cgroup", 0x02000000)
enter("mnt", 0x00020000)
def readonly():
    return os.statvfs("/sys/fs/cgroup").f_flag & os.ST_RDONLY
if libc.mount(None, b"/sys/fs/cgroup", None, 32 | 4096 | 2 | 4 | 8, None) != 0:
    fail("mount")
if readonly() and libc.mount(None, b"/sys/fs/cgroup", None, 32 | 2 | 4 | 8, None) != 0:
    fail("remount")
if readonly():
    sys.exit("the mount is still read-only")
"""


class CgroupMountError(VacError):
    """A container's cgroup mount cannot (or may not) be made writable."""


def _fields(line: str) -> Optional[List[str]]:
    """[root, point, mount options, fstype, super options] of a mountinfo line, or None."""
    before, sep, after = line.partition(" - ")
    head, tail = before.split(), after.split()
    if not sep or len(head) < 6 or len(tail) < 3:
        return None
    return [cgroups.unescape_mount_field(head[3]), cgroups.unescape_mount_field(head[4]),
            head[5], tail[0], tail[2]]


def cgroup2_at(mountinfo: str, point: str = POINT) -> Optional[List[str]]:
    """The fields (as _fields) of the topmost mount at `point` if it is cgroup2, else None."""
    found = None
    for line in mountinfo.splitlines():
        fields = _fields(line)
        if fields is not None and fields[1] == point:
            found = fields
    return found if found is not None and found[3] == "cgroup2" else None


def host_delegates(mountinfo: str) -> bool:
    """Is the host's cgroup2 at /sys/fs/cgroup mounted with nsdelegate?"""
    fields = cgroup2_at(mountinfo)
    return fields is not None and "nsdelegate" in fields[4].split(",")


def check(pid: int, cgroup_path: str, proc_root: str = "/proc") -> None:
    """Raise CgroupMountError unless the container of `pid`, whose cgroup (and namespace
    root) is `cgroup_path` in the host's view, may have its mount made writable."""
    own = fsutil.read_optional(os.path.join(proc_root, "self", "mountinfo"), MOUNTINFO_LIMIT)
    if not host_delegates(own or ""):
        raise CgroupMountError(f"the host's cgroup2 at {POINT} is not mounted nsdelegate")
    try:
        theirs = os.stat(os.path.join(proc_root, str(pid), "ns", "cgroup")).st_ino
        ours = os.stat(os.path.join(proc_root, "self", "ns", "cgroup")).st_ino
    except OSError as e:
        raise CgroupMountError(f"cannot read the cgroup namespace of pid {pid}: {e}") from e
    if theirs == ours:
        raise CgroupMountError(f"pid {pid} shares the host's cgroup namespace")
    text = fsutil.read_optional(os.path.join(proc_root, str(pid), "mountinfo"), MOUNTINFO_LIMIT)
    fields = cgroup2_at(text or "")
    if fields is None or cgroups.clean_path(fields[0]) != cgroups.clean_path(cgroup_path):
        raise CgroupMountError(f"pid {pid} has no cgroup2 mount of its own namespace at {POINT}")


def namespace_root(pid: int, cgroup_path: Optional[str],
                   proc_root: str = "/proc") -> Optional[str]:
    """The root of the cgroup2 mount a process sees at /sys/fs/cgroup (its cgroup namespace's
    root in the host's view: a container's own cgroup), if it is a proper cgroup above or at
    the process's own `cgroup_path`; None otherwise (no such mount, the host's root, or not
    an ancestor: a process's mounts are not trusted further)."""
    if cgroup_path is None:
        return None
    text = fsutil.read_optional(os.path.join(proc_root, str(pid), "mountinfo"), MOUNTINFO_LIMIT)
    fields = cgroup2_at(text or "")
    root = cgroups.clean_path(fields[0]) if fields is not None else None
    own = cgroups.clean_path(cgroup_path)
    if root is None or own is None or root == "/":
        return None
    return root if own == root or own.startswith(root + "/") else None


def make_writable(pid: int, cgroup_path: str, proc_root: str = "/proc") -> None:
    """Check (as `check`), then remount the container's /sys/fs/cgroup read-write.

    Raises:
        CgroupMountError: not safe here, or the remount failed.
    """
    check(pid, cgroup_path, proc_root)
    try:
        subp.run([sys.executable, "-I", "-S", "-c", SCRIPT, str(int(pid))],
                 timeout=TIMEOUT_SECONDS)
    except ProcessError as e:
        raise CgroupMountError(f"cannot remount {POINT} of pid {pid} read-write: {e}") from e
