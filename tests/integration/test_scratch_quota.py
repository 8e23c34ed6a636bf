# SPDX-License-Identifier: BSD-2-Clause
"""The project quota scratch on a real XFS (issue 29): a small sparse file made XFS and
loop-mounted with prjquota is the state directory; with loop mounts ruled out, choose() takes
the project quota; a machine's scratch made by ProjectQuota fills to ENOSPC at its size, its
used bytes are read from the quota (scratch.used_bytes, and the disk reading's), and remove()
and release_leftovers() take the directory and clear the limit, while a directory of another
project (an admin's, outside Vac's range) keeps its ID, limit and files. Needs root, loop
devices, mkfs.xfs (xfsprogs) and a kernel with XFS quota support (CONFIG_XFS_QUOTA); no engine.
The CI host's kernel has none (mount says "quota support not available in this kernel"), so
this runs in the cgroup v2 guest (Debian's kernel; scripts/ci/run-v2-tests.sh, VAC_V2_GUEST=1),
where, under CI=true, anything missing is a failure; elsewhere it skips, saying why."""
from __future__ import annotations

import errno
import os
import shutil

import pytest
from waiting import wait_until

from vac import subp
from vac.cycle.hostdisk import quota_scratches
from vac.errors import ProcessError
from vac.host import projquota
from vac.machine import scratch
from vac.machine.directory import MachineDir
from vac.machine.scratchquota import ProjectQuota

MIB = 1024 * 1024
FACTORY = "q9quota.example.com"
ADMIN_PROJECT = 42
SIZE = 16 * MIB


@pytest.fixture
def xfs_state(tmp_path):
    """A 320 MiB XFS (its smallest size) loop-mounted with prjquota at tmp_path/state;
    unmounted and its loop device gone afterwards, whatever happened."""
    why = ("not root" if os.geteuid() != 0 else
           "no /dev/loop-control" if not os.path.exists("/dev/loop-control") else
           "no mkfs.xfs (xfsprogs)" if not shutil.which("mkfs.xfs") else "")
    if why:
        _unsupported(why)
    image, state = tmp_path / "state.img", tmp_path / "state"
    state.mkdir()
    with open(image, "wb") as f:
        f.truncate(320 * MIB)
    try:
        subp.run(["mkfs.xfs", "-q", "-f", str(image)], timeout=120)
        subp.run(["mount", "-o", "loop,prjquota", str(image), str(state)], timeout=60)
    except ProcessError as e:
        _detach(str(image))
        _unsupported(f"cannot mount XFS with prjquota (a kernel without CONFIG_XFS_QUOTA?): {e}")
    try:
        yield str(state)
    finally:
        try:
            subp.run(["umount", str(state)], timeout=60)
        except ProcessError:
            subp.run(["umount", "-l", str(state)], timeout=60)
        _detach(str(image))
        image.unlink()


def _unsupported(problem: str) -> None:
    """Skip, saying where this runs; fail in the v2 guest under CI."""
    message = f"XFS project quotas: {problem}"
    if os.environ.get("VAC_V2_GUEST") == "1" and os.environ.get("CI") == "true":
        pytest.fail(message + " (in the v2 guest under CI: that is a failure)")
    pytest.skip(message + "; this runs in the cgroup v2 guest (scripts/ci/run-v2-tests.sh "
                          "tests/integration/test_scratch_quota.py)")


def _detach(image: str) -> None:
    """Any loop device still backed by image (mount's autoclear should have freed it)."""
    try:
        out = subp.run(["losetup", "-j", image], timeout=30).stdout
    except (ProcessError, OSError):
        return
    for line in out.splitlines():
        subp.run(["losetup", "-d", line.split(":", 1)[0]], timeout=30, check=False)


def _machine(state: str, created: int, number: int) -> MachineDir:
    path = os.path.join(state, "machines", f"{created}_alpha_q9quota-{number:02d}.example.com")
    os.makedirs(os.path.join(path, "jobfeatures"))
    return MachineDir(path)


def _fill(path: str, limit: int) -> int:
    """Write into path until the filesystem refuses; the errno it refused with."""
    with open(path, "wb") as f:
        for _ in range(limit // MIB + 8):
            try:
                f.write(b"\1" * MIB)
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                return e.errno
    return 0


def _admin_project(state: str, kernel: projquota.Kernel, device: str) -> str:
    other = os.path.join(state, "admin")
    os.mkdir(other)
    kernel.assign(other, ADMIN_PROJECT)
    kernel.limit(device, ADMIN_PROJECT, 5 * MIB)
    with open(os.path.join(other, "data"), "wb") as f:
        f.write(b"\2" * MIB)
    return other


def test_a_project_quota_scratch_fills_to_enospc_and_goes(xfs_state):
    state = xfs_state
    chosen = scratch.choose(None, exists=lambda path: False, state_dir=state)
    assert chosen.name == scratch.QUOTA, chosen.detail
    assert "not a loop-mounted file" in chosen.detail
    kernel = projquota.Kernel()
    device = projquota.device(state)[0]
    other = _admin_project(state, kernel, device)
    maker = ProjectQuota(state)

    first = _machine(state, 100, 0)
    name = os.path.basename(first.path)
    area = scratch.create(state, first, SIZE, maker)
    assert area == scratch.mount_point(state, name) and not scratch.is_mounted(area)
    projid = maker.project_of(area)
    assert projid is not None and projquota.owned(projid)
    assert first.read(scratch.MJF_KEY) == str(SIZE)
    assert _fill(os.path.join(area, "fill"), SIZE) == errno.ENOSPC
    used = scratch.used_bytes(state, name)
    assert SIZE - 2 * MIB <= used <= SIZE
    assert quota_scratches(state)[name].used == used
    assert scratch.create(state, first, SIZE, maker) == area        # adoption keeps it
    assert maker.project_of(area) == projid and os.path.exists(os.path.join(area, "fill"))

    second = _machine(state, 101, 1)
    area2 = scratch.create(state, second, SIZE, maker)
    assert maker.project_of(area2) not in (None, projid)
    os.makedirs(os.path.join(area2, "deep", "er"))
    os.symlink(other, os.path.join(area2, "deep", "link"))
    assert scratch.remove(state, os.path.basename(second.path), maker)
    assert not os.path.exists(area2) and os.path.exists(os.path.join(other, "data"))

    open(first.file("finished"), "w").close()
    assert scratch.release_leftovers(state, FACTORY, maker) == [name]
    assert not os.path.exists(area)
    # The removed directory's inode leaves the project's count once XFS has inactivated it,
    # which it does in the background (seen: one inode still counted just after the rmdir).
    assert wait_until(lambda: kernel.usage(device, projid) == (0, 0, 0)), \
        kernel.usage(device, projid)
    assert scratch.used_bytes(state, name) is None

    assert 0 < scratch.trial(state, maker) <= scratch.MIN_BYTES
    assert kernel.project(other)[1] == ADMIN_PROJECT
    used, inodes, limit = kernel.usage(device, ADMIN_PROJECT)
    assert used >= MIB and inodes == 2 and limit == 5 * MIB
