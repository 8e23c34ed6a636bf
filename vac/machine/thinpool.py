# SPDX-License-Identifier: BSD-2-Clause
"""The thin pool as admission by free disk space sees it, when the machines' scratch is made
in it (the lvm-thin mechanism, vac.machine.scratchlv).

A thin pool is not a filesystem: statvfs of the scratch pool's directory reads the filesystem
holding the mount points, not the pool the scratch volumes take their blocks from. So the
pool is read through LVM: its free bytes are its data not yet given to any volume, its size
its data volume's, and what may still grow in it is, besides the mounted scratch (whose free
space inside each is counted as for the loop mechanism), the room of its other thin volumes:
the VMs' thin disks, each one's size less what it has been given. Its label is
"thin pool <vg>/<pool>" and it is marked as where the scratch grows. The same reading says
the bytes given to each thin volume: a VM's thin scratch disk's bytes in use.
"""
from __future__ import annotations

import os
from typing import Dict, NamedTuple, Optional, Sequence

from vac.host import diskspace, lvm
from vac.machine import scratch


class ThinReading(NamedTuple):
    """The pool as a watched filesystem, and the bytes it has given to each thin volume."""

    filesystem: diskspace.Filesystem
    given: Dict[str, int]


def reading(mechanism: scratch.Mechanism, pool_dir: str, mounts: Sequence[str],
            run: Optional[lvm.Runner] = None) -> Optional[ThinReading]:
    """The thin pool the scratch is made in, read once through LVM; None unless the
    mechanism is lvm-thin.

    Raises:
        LvmError: LVM could not be asked, or did not report the pool.
    """
    if mechanism.name != scratch.LVM_THIN:
        return None
    group = lvm.read_group(mechanism.group, run)
    if mechanism.pool not in group.pools():
        raise lvm.LvmError(f"volume group {mechanism.group} has no thin pool {mechanism.pool}")
    prefix = pool_dir.rstrip(os.sep) + os.sep
    mounted = {m[len(prefix):] for m in mounts if m.startswith(prefix)}
    fs = diskspace.Filesystem((diskspace.THIN,), f"{mechanism.group}/{mechanism.pool}",
                              group.pool_free(mechanism.pool),
                              group.pool_size(mechanism.pool), scratch=True,
                              growth=group.pool_room(mechanism.pool, leave=mounted))
    return ThinReading(fs, group.given(mechanism.pool))
