# SPDX-License-Identifier: BSD-2-Clause
"""A volume group as an admin would make one for Vac, on a loop device over a sparse file:
one PV, the group, and a thin pool named vac_thin_pool (vac.host.lvm.POOL_NAME), or none for
thick volumes. Used by the LVM tests (test_lvm.py, test_lvm_libvirt.py) and the scratch
benchmark's guest run (bench/scratch.py) in the cgroup v2 guest, whose kernel has
device-mapper; require_lvm() skips them elsewhere. Everything is removed afterwards, volumes
and their mounts first."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from typing import Iterator, List, Optional

import pytest

from vac.host import lvm
from vac.machine import scratch

GIB = 1024 ** 3
TOOLS = ("losetup", "pvcreate", "vgcreate", "vgremove", "pvremove", "lvcreate", "lvremove",
         "lvs", "vgs", "thin_check", "mkfs.ext4", "mount", "umount")


def lvm_problem() -> str:
    """Why LVM cannot be tested here ('' if it can)."""
    if os.geteuid() != 0:
        return "not root"
    if not lvm.device_mapper():
        return f"this kernel has no device-mapper ({lvm.MAPPER_CONTROL})"
    absent = [t for t in TOOLS if not shutil.which(t)]
    if absent:
        return f"{', '.join(absent)} not installed (lvm2, thin-provisioning-tools)"
    return ""


def require_lvm(test_file: str) -> None:
    """Skip where LVM cannot work, saying where these run; fail in the v2 guest under CI."""
    problem = lvm_problem()
    if not problem:
        return
    message = f"LVM volumes: {problem}"
    if os.environ.get("VAC_V2_GUEST") == "1" and os.environ.get("CI") == "true":
        pytest.fail(message + " (in the v2 guest under CI: that is a failure)")
    pytest.skip(message + f"; these run in the cgroup v2 guest (scripts/ci/run-v2-tests.sh "
                          f"{test_file})")


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
def loop_volume_group(pv_gib: int = 6, pool: Optional[str] = "5g") -> Iterator[str]:
    """A new volume group (its name yielded) with a thin pool of `pool` (lvcreate's size;
    None: no pool) on a sparse file of pv_gib GiB: only what is written takes space."""
    name = f"vactest{uuid.uuid4().hex[:6]}"
    image = f"/var/tmp/{name}.pv"
    with open(image, "wb") as f:
        f.truncate(pv_gib * GIB)
    loop = run(["losetup", "--find", "--show", image]).stdout.strip()
    try:
        run(["pvcreate", "--yes", loop])
        run(["vgcreate", "--yes", name, loop])
        if pool is not None:
            run(["lvcreate", "--yes", "--type", "thin-pool", "-L", pool, "-n", lvm.POOL_NAME,
                 name])
        yield name
    finally:
        for volume in volumes(name):
            unmount_everywhere(name, volume)
        run(["vgremove", "--yes", "--force", name], check=False)
        run(["pvremove", "--yes", loop], check=False)
        run(["losetup", "--detach", loop], check=False)
        os.unlink(image)
