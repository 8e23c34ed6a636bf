# SPDX-License-Identifier: BSD-2-Clause
"""The host's disk space as admission by free space sees it: the filesystems that machines
and the factory write to, and what the machines may still grow into.

read() takes one reading: for each place watched (the state directory, the scratch pool
<state_dir>/scratch, and the places the backends name, each labelled by the caller: "docker
data root", "podman storage", "libvirt disk files") the free and total bytes of the
filesystem that holds it, places on the same filesystem (the same st_dev) reported once under
all their names; for each mounted scratch in the pool, the bytes used and free inside it (what
that machine may still write: it grows the pool's files by as much at most; the caller names
the pool and the mount points, vac.machine.scratch's); and the room of the running machines'
disk files that may still grow (a VM's sparse disk file: its size less what is allocated),
counted on the filesystem of the directory each is in. Free bytes are those unprivileged
writers get (f_bavail, as df shows). A place that cannot be read is left out and named in
`problems`; reading never raises.

The decision is vac.cycle.diskgate (pure); vac.cycle.hostdisk takes the readings each cycle.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

STATE = "state directory"
POOL = "scratch pool"
THIN = "thin pool"         # a volume group's thin pool, read through LVM, not statvfs
Place = Tuple[str, str]        # (label, path) of a place watched
Growing = Tuple[str, int]      # (directory, bytes) a running machine's disk file may grow by


@dataclass(frozen=True)
class Filesystem:
    """One filesystem watched: what lives there (`names`, e.g. "state directory"), the path
    it was read at, its free and total bytes, whether the machines' scratch grows in it, and
    the bytes the running machines' disk files may still grow by in it."""

    names: Tuple[str, ...]
    path: str
    free: int
    total: int
    scratch: bool = False
    growth: int = 0

    @property
    def label(self) -> str:
        return f"{' and '.join(self.names)} {self.path}"


@dataclass(frozen=True)
class Scratch:
    """One machine's scratch: bytes used and still free inside it (a mounted scratch; or a
    VM's scratch disk file, vac.cycle.hostdisk: its allocated bytes, free 0, as its room is
    counted with the disk files' growth)."""

    used: int
    free: int


@dataclass(frozen=True)
class DiskReading:
    """One reading of the host's disk: its filesystems, each machine's scratch (machine
    directory name -> Scratch), whether new container machines get a scratch (this host has a
    mechanism for it), and the places that could not be read."""

    filesystems: Tuple[Filesystem, ...] = ()
    scratches: Mapping[str, Scratch] = field(default_factory=dict)
    scratch_made: bool = False
    problems: Tuple[str, ...] = ()
    # Bytes the thin pool of the scratch has given to each of its thin volumes, by name.
    thin_given: Mapping[str, int] = field(default_factory=dict)

    def scratch_growth(self) -> int:
        """Bytes the running machines' scratch may still grow into, all together."""
        return sum(s.free for s in self.scratches.values())

    def growth(self) -> int:
        """Bytes the running machines' scratch and disk files may still grow into, all
        together."""
        return self.scratch_growth() + sum(f.growth for f in self.filesystems)


def read(state_dir: str, pool: str, mounts: Sequence[str], places: Sequence[Place] = (),
         scratch_made: bool = False, growing: Sequence[Growing] = (),
         statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
         stat: Callable[[str], os.stat_result] = os.stat,
         thin: Optional[Filesystem] = None) -> DiskReading:
    """The reading of the places this factory writes to (see the module's docstring):
    `pool` is the scratch pool's directory, `mounts` the host's mount points (those in the
    pool are the machines' scratch), `places` the backends' labelled places, `growing` the
    running machines' disk files' room by the directory each is in, `thin` the thin pool the
    machines' scratch is made in, when it is (it is then where the scratch grows, not the
    filesystem of the pool's directory, which holds only the mount points)."""
    watched = [(STATE, state_dir)]
    if os.path.isdir(pool):
        watched.append((POOL, pool))
    watched.extend((label, path) for label, path in places if path)
    filesystems, problems = _filesystems(watched, _grown(growing, stat), statvfs, stat)
    if thin is not None:
        filesystems = tuple(replace(f, scratch=False) for f in filesystems) + (thin,)
    return DiskReading(filesystems, _scratches(pool, mounts, statvfs), scratch_made,
                       tuple(problems))


def _grown(growing: Sequence[Growing], stat: Callable) -> Dict[int, int]:
    """Device -> the bytes the disk files in directories on it may still grow by (a
    directory that cannot be read is left out: its place, if named, says why)."""
    found: Dict[int, int] = {}
    for directory, room in growing:
        try:
            device = stat(directory).st_dev
        except OSError:
            continue
        found[device] = found.get(device, 0) + max(int(room), 0)
    return found


def _filesystems(places: Sequence[Place], grown: Mapping[int, int], statvfs: Callable,
                 stat: Callable) -> Tuple[Tuple[Filesystem, ...], List[str]]:
    """The filesystems holding the places, one per device, in the places' order."""
    found: Dict[int, Filesystem] = {}
    problems = []
    pool_device = None
    for name, path in places:
        try:
            device = stat(path).st_dev
            st = statvfs(path)
        except OSError as e:
            problems.append(f"{name} {path}: {e.strerror or e}")
            continue
        if name == POOL or (name == STATE and pool_device is None):
            pool_device = device    # the pool lives in the state directory until it exists
        if device in found:
            old = found[device]
            if name not in old.names:
                found[device] = Filesystem(old.names + (name,), old.path, old.free, old.total)
        else:
            found[device] = Filesystem((name,), path, st.f_bavail * st.f_frsize,
                                       st.f_blocks * st.f_frsize)
    marked = tuple(Filesystem(f.names, f.path, f.free, f.total, scratch=device == pool_device,
                              growth=grown.get(device, 0))
                   for device, f in found.items())
    return marked, problems


def _scratches(pool: str, mounts: Sequence[str], statvfs: Callable) -> Dict[str, Scratch]:
    """Machine directory name -> its mounted scratch's used and free bytes."""
    prefix = pool.rstrip(os.sep) + os.sep
    found = {}
    for target in mounts:
        name = target[len(prefix):]
        if not target.startswith(prefix) or not name or os.sep in name or name.startswith("."):
            continue
        try:
            st = statvfs(target)
        except OSError:
            continue
        found[name] = Scratch((st.f_blocks - st.f_bfree) * st.f_frsize,
                              st.f_bavail * st.f_frsize)
    return found
