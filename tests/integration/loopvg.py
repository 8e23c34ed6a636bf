# SPDX-License-Identifier: BSD-2-Clause
"""A volume group as an admin would make one for Vac, on a loop device over a sparse file:
one PV, the group, and a thin pool named vac_thin_pool (vac.host.lvm.POOL_NAME). Used by the
LVM tests (test_lvm.py) and the scratch benchmark's guest run (bench/scratch.py) in the cgroup
v2 guest, whose kernel has device-mapper. Everything is removed afterwards, volumes and their
mounts first."""
from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from typing import Iterator, List

from vac.host import lvm
from vac.machine import scratch

GIB = 1024 ** 3


def run(argv: List[str], check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=check)


def volumes(vg: str) -> List[str]:
    done = run(["lvs", "--noheadings", "-o", "lv_name", vg], check=False)
    return [line.strip() for line in done.stdout.splitlines() if line.strip()]


def unmount_everywhere(vg: str, volume: str) -> None:
    try:
        device = os.stat(lvm.device(vg, volume)).st_rdev
    except OSError:
        return
    for point in scratch.mounts_of(device):
        run(["umount", "-l", point], check=False)


@contextlib.contextmanager
def loop_volume_group(pv_gib: int = 6, pool: str = "5g") -> Iterator[str]:
    """A new volume group (its name yielded) with a thin pool of `pool` (lvcreate's size)
    on a sparse file of pv_gib GiB: only what is written takes space."""
    name = f"vactest{uuid.uuid4().hex[:6]}"
    image = f"/var/tmp/{name}.pv"
    with open(image, "wb") as f:
        f.truncate(pv_gib * GIB)
    loop = run(["losetup", "--find", "--show", image]).stdout.strip()
    try:
        run(["pvcreate", "--yes", loop])
        run(["vgcreate", "--yes", name, loop])
        run(["lvcreate", "--yes", "--type", "thin-pool", "-L", pool, "-n", lvm.POOL_NAME, name])
        yield name
    finally:
        for volume in volumes(name):
            unmount_everywhere(name, volume)
        run(["vgremove", "--yes", "--force", name], check=False)
        run(["pvremove", "--yes", loop], check=False)
        run(["losetup", "--detach", loop], check=False)
        os.unlink(image)
