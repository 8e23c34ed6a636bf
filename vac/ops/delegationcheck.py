# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s cgroup delegation check: does this host delegate each container
machine's cgroup to what runs in it (vacd.8, CGROUP DELEGATION).

    ok    cgroup v2 at /sys/fs/cgroup: Apptainer machines get their subtree, Docker machines
          too when the cgroup2 mount is nsdelegate; the controllers the subtree can have
    ok    cgroup v1 or hybrid: not supported there, said as such (machines run as before)
    warn  cgroup v2 without nsdelegate: Docker machines run without delegation
"""
from __future__ import annotations

import os
from typing import List

from vac import fsutil
from vac.host import cgroupmount, cgroups, delegation
from vac.ops.checks import OK, WARN, Check

NAME = "cgroup-delegation"
NSDELEGATE_FIX = "mount the cgroup2 hierarchy with -o nsdelegate (systemd does by default)"


def host_delegation(proc_root: str = "/proc") -> List[Check]:
    """One line: whether machines' cgroups are delegated on this host, and why not."""
    hierarchy = cgroups.read_hierarchy(proc_root)
    if hierarchy.version != 2:
        return [Check(NAME, OK, "not supported on this cgroup v1 (or hybrid) host: machines "
                                "get no delegated cgroup; nothing changes")]
    root = hierarchy.root(cgroups.V2) or cgroups.UNIFIED_POINT
    have = delegation.available(cgroups.CgroupFS(), root)
    found = f"controllers for the subtree: {' '.join(have) or 'none'}"
    mountinfo = fsutil.read_optional(os.path.join(proc_root, "self", "mountinfo"),
                                     cgroupmount.MOUNTINFO_LIMIT) or ""
    if not cgroupmount.host_delegates(mountinfo):
        return [Check(NAME, WARN, f"Apptainer machines only ({found}): cgroup2 is not mounted "
                                  "nsdelegate, so Docker machines get no delegated cgroup",
                      NSDELEGATE_FIX)]
    return [Check(NAME, OK, f"Apptainer and Docker machines get their cgroup delegated ({found})")]
