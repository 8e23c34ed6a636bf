# SPDX-License-Identifier: BSD-2-Clause
"""The running VMs' disk files that may still grow on the host's disk: what admission by free
disk space counts of a VM (vac.backends.base.Backend.disk_growth).

A VM's root or scratch disk file is sparse, and a vm-raw VM's root is a qcow2 overlay: both are
made in the state directory's tmp/ and unlinked once QEMU has them open
(vac.backends.libvirt.images), so only the QEMU process still holds them. Each running
domain's QEMU process (the pid libvirt writes to /run/libvirt/qemu/<name>.pid, as
vac.backends.libvirt.scope reads it) is looked at through /proc/<pid>/fd for the files it
holds under that directory, each file once. A raw file may grow to its apparent size, a
qcow2 file to its virtual size (from its header); it takes its allocated blocks now. Which
disk a file is comes from the name vac.backends.libvirt.images gave it (root.disk.*, the root
disk or overlay; scratch.disk.*, a vm-raw VM's scratch disk). A logical volume is no file
there and counts nothing. Never raises: a domain or a file that
cannot be read counts nothing.
"""
from __future__ import annotations

import os
import struct
from typing import List, Optional, Set, Tuple

from vac.backends.base import ROOT_DISK, SCRATCH_DISK, DiskGrowth
from vac.backends.libvirt import images, scope

QCOW2_MAGIC = b"QFI\xfb"
QCOW2_HEADER = 32        # magic, version, backing file offset and size, cluster bits, size
DELETED = " (deleted)"
PID_SUFFIX = ".pid"
MAX_FDS = 4096           # a QEMU process holds tens; more is not a VM's


def growth(directory: str, pid_dir: str = scope.PID_DIR,
           proc_root: str = "/proc") -> List[DiskGrowth]:
    """The disk files the running domains' QEMU processes hold under `directory`."""
    found: List[DiskGrowth] = []
    for name in _domains(pid_dir):
        pid = scope.qemu_pid(name, pid_dir)
        if pid is not None:
            found += held(name, os.path.join(proc_root, str(pid), "fd"), directory)
    return found


def held(name: str, fd_dir: str, directory: str) -> List[DiskGrowth]:
    """Each file under `directory` that the fds in fd_dir hold (once), as domain name's."""
    where = os.path.realpath(directory)
    seen: Set[Tuple[int, int]] = set()
    found = []
    for fd in _fds(fd_dir):
        link = os.path.join(fd_dir, fd)
        try:
            target = os.readlink(link)
            st = os.stat(link)
        except OSError:
            continue
        if target.endswith(DELETED):
            target = target[:-len(DELETED)]
        if os.path.dirname(target) != where or (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        size = qcow2_size(link)
        found.append(DiskGrowth(name, directory, size if size is not None else st.st_size,
                                st.st_blocks * 512, kind_of(target)))
    return found


def kind_of(path: str) -> str:
    """Which disk the file at path is, by the prefix its name was made with ("" if neither)."""
    name = os.path.basename(path)
    for prefix, kind in ((images.ROOT_PREFIX, ROOT_DISK), (images.SCRATCH_PREFIX, SCRATCH_DISK)):
        if name.startswith(prefix):
            return kind
    return ""


def qcow2_size(path: str) -> Optional[int]:
    """The virtual size a qcow2 file's header says, None if it is not qcow2."""
    try:
        with open(path, "rb") as f:
            header = f.read(QCOW2_HEADER)
    except OSError:
        return None
    if len(header) < QCOW2_HEADER or not header.startswith(QCOW2_MAGIC):
        return None
    return struct.unpack(">Q", header[24:32])[0]


def _domains(pid_dir: str) -> List[str]:
    try:
        names = os.listdir(pid_dir)
    except OSError:
        return []
    return sorted(n[:-len(PID_SUFFIX)] for n in names if n.endswith(PID_SUFFIX))


def _fds(fd_dir: str) -> List[str]:
    try:
        return [fd for fd in os.listdir(fd_dir) if fd.isdigit()][:MAX_FDS]
    except OSError:
        return []
