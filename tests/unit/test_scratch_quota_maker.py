# SPDX-License-Identifier: BSD-2-Clause
"""The project quota scratch with a fake kernel: choose() takes it after lvm-thin and loop,
saying why; the maker allocates IDs only in Vac's range, never one another directory holds or
one the quota charges; adoption keeps a directory; drop and remove take the tree and clear the
limit and touch no other project; the usage read for the heartbeat and admission; the
filesystem probe from mountinfo; vac doctor's line."""
from __future__ import annotations

import errno
import os
import zlib

import pytest

from vac.cycle.hostdisk import quota_scratches
from vac.host import projquota
from vac.machine import scratch
from vac.machine.scratchquota import ProjectQuota

FACTORY = "f1.example.com"
NAME = "100_mt_f1-00.example.com"
FIRST = projquota.FIRST_ID
MIB = 1024 * 1024


class FakeKernel:
    """Project IDs kept per real directory path; usage and limits per ID."""

    def __init__(self, charged=None):
        self.ids = {}
        self.charged = dict(charged or {})     # projid -> (bytes, inodes)
        self.limits = {}
        self.fail_assign = False

    def project(self, path):
        if not os.path.isdir(path) or os.path.islink(path):
            raise OSError(errno.ENOENT, path)
        return projquota.FS_XFLAG_PROJINHERIT, self.ids.get(path, 0)

    def assign(self, path, projid):
        if self.fail_assign:
            raise OSError(errno.EOPNOTSUPP, "not supported")
        self.ids[path] = projid

    def usage(self, device, projid):
        used, inodes = self.charged.get(projid, (0, 0))
        inodes += sum(1 for p, i in self.ids.items() if i == projid and os.path.isdir(p))
        return used, inodes, self.limits.get(projid, 0)

    def limit(self, device, projid, size):
        assert projquota.owned(projid) or projid == 42
        self.limits[projid] = size


def _maker(tmp_path, kernel):
    return ProjectQuota(str(tmp_path), kernel, device="/dev/fake")


def _start(name=NAME):
    return FIRST + zlib.crc32(name.encode()) % projquota.ID_COUNT


# choose() ------------------------------------------------------------------------------------

def _which(name):
    return f"/usr/sbin/{name}"


def test_quota_chosen_after_lvm_and_loop_with_the_reasons(tmp_path):
    asked = []
    m = scratch.choose(None, _which, lambda path: False, lambda: 0, state_dir=str(tmp_path),
                       quota_missing=lambda path: asked.append(path) or "")
    assert m.name == scratch.QUOTA and asked == [str(tmp_path)]
    assert "no volume_group" in m.detail and "not a loop-mounted file: no /dev/loop-control" \
        in m.detail
    os.mkdir(scratch.pool(str(tmp_path)))
    scratch.choose(None, _which, lambda path: False, lambda: 0, state_dir=str(tmp_path),
                   quota_missing=lambda path: asked.append(path) or "")
    assert asked[-1] == scratch.pool(str(tmp_path))
    m = scratch.choose(None, _which, lambda path: True, lambda: 0, state_dir=str(tmp_path),
                       quota_missing=lambda path: pytest.fail("loop comes first"))
    assert m.name == scratch.LOOP


def test_none_says_why_not_a_quota(tmp_path):
    m = scratch.choose(None, _which, lambda path: False, lambda: 0, state_dir=str(tmp_path),
                       quota_missing=lambda path: f"{path} is on tmpfs, not xfs")
    assert m.name == scratch.NONE and f"not a project quota: {tmp_path} is on tmpfs" in m.detail
    m = scratch.choose(None, _which, lambda path: False, lambda: 1000, state_dir=str(tmp_path),
                       quota_missing=lambda path: "")
    assert m.name == scratch.NONE and "not a project quota: vacd is not root" in m.detail
    m = scratch.choose(None, _which, lambda path: False, lambda: 0, quota_missing=lambda p: "")
    assert m.name == scratch.NONE and "no state directory" in m.detail


# The maker -----------------------------------------------------------------------------------

def test_make_gives_a_fresh_id_in_range_and_the_limit(tmp_path):
    start = _start()
    held = os.path.join(scratch.pool(str(tmp_path)), "other")
    os.makedirs(held)
    kernel = FakeKernel(charged={start + 1: (0, 3)})      # charged elsewhere on the filesystem
    kernel.ids[held] = start
    target = _maker(tmp_path, kernel).make(str(tmp_path), NAME, 5 * MIB)
    assert target == scratch.mount_point(str(tmp_path), NAME)
    assert kernel.ids[target] == start + 2 and kernel.limits[start + 2] == 5 * MIB
    assert os.stat(target).st_mode & 0o7777 == 0o1777
    assert kernel.ids[held] == start and start not in kernel.limits


def test_the_id_search_wraps_within_the_range(tmp_path):
    name = next(n for n in (f"{i}_mt_f1-00.example.com" for i in range(10 ** 6))
                if _start(n) == FIRST + projquota.ID_COUNT - 1)
    kernel = FakeKernel(charged={FIRST + projquota.ID_COUNT - 1: (0, 1)})
    target = _maker(tmp_path, kernel).make(str(tmp_path), name, MIB)
    assert kernel.ids[target] == FIRST


def test_adoption_keeps_the_directory_and_its_id(tmp_path):
    kernel = FakeKernel()
    maker = _maker(tmp_path, kernel)
    target = maker.make(str(tmp_path), NAME, MIB)
    projid = kernel.ids[target]
    open(os.path.join(target, "work"), "w").close()
    assert maker.make(str(tmp_path), NAME, 2 * MIB) == target
    assert kernel.ids[target] == projid and kernel.limits[projid] == 2 * MIB
    assert os.path.exists(os.path.join(target, "work"))


def test_a_leftover_without_an_id_of_vacs_is_replaced(tmp_path):
    kernel = FakeKernel()
    target = scratch.mount_point(str(tmp_path), NAME)
    os.makedirs(os.path.join(target, "old"))
    kernel.ids[target] = 42
    _maker(tmp_path, kernel).make(str(tmp_path), NAME, MIB)
    assert not os.path.exists(os.path.join(target, "old")) and projquota.owned(kernel.ids[target])
    assert 42 not in kernel.limits


def test_a_failed_make_leaves_nothing(tmp_path):
    kernel = FakeKernel()
    kernel.fail_assign = True
    with pytest.raises(scratch.ScratchError, match="project quota scratch"):
        _maker(tmp_path, kernel).make(str(tmp_path), NAME, MIB)
    assert not os.path.exists(scratch.mount_point(str(tmp_path), NAME)) and not kernel.limits


def test_every_id_taken_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(projquota, "ID_COUNT", 2)
    kernel = FakeKernel(charged={FIRST: (0, 1), FIRST + 1: (0, 1)})
    with pytest.raises(scratch.ScratchError, match="all 2 project IDs"):
        _maker(tmp_path, kernel).make(str(tmp_path), NAME, MIB)


def test_remove_takes_the_tree_and_clears_the_limit_only(tmp_path):
    kernel = FakeKernel()
    maker = _maker(tmp_path, kernel)
    target = maker.make(str(tmp_path), NAME, MIB)
    projid = kernel.ids[target]
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    os.makedirs(os.path.join(target, "a", "b"))
    os.symlink(str(outside), os.path.join(target, "a", "link"))
    assert scratch.remove(str(tmp_path), NAME, maker)
    assert not os.path.exists(target) and (outside / "keep").exists()
    assert kernel.limits == {projid: 0}
    assert not scratch.remove(str(tmp_path), NAME, maker)


def test_remove_never_crosses_a_mount(tmp_path, monkeypatch):
    kernel = FakeKernel()
    maker = _maker(tmp_path, kernel)
    target = maker.make(str(tmp_path), NAME, MIB)
    os.mkdir(os.path.join(target, "m"))
    monkeypatch.setattr(scratch, "mounted", lambda *a: [os.path.join(target, "m")])
    with pytest.raises(scratch.ScratchError, match="is mounted in it"):
        scratch.remove(str(tmp_path), NAME, maker)
    assert os.path.isdir(os.path.join(target, "m"))


def test_leftovers_go_through_the_maker_and_without_one_the_tree_still_goes(tmp_path):
    kernel = FakeKernel()
    maker = _maker(tmp_path, kernel)
    gone, other = NAME, "101_mt_f1-01.example.com"
    for name in (gone, other):
        open(os.path.join(maker.make(str(tmp_path), name, MIB), "f"), "w").close()
    assert scratch.release_leftovers(str(tmp_path), FACTORY, maker) == [gone, other]
    assert sorted(kernel.limits.values()) == [0, 0]
    again = maker.make(str(tmp_path), gone, MIB)
    open(os.path.join(again, "f"), "w").close()
    assert scratch.release_leftovers(str(tmp_path), FACTORY) == [gone]
    assert not os.path.exists(again)


# Usage and the filesystem probe --------------------------------------------------------------

def test_usage_is_the_quotas_for_the_heartbeat_and_admission(tmp_path, monkeypatch):
    kernel = FakeKernel()
    target = _maker(tmp_path, kernel).make(str(tmp_path), NAME, 10 * MIB)
    kernel.charged[kernel.ids[target]] = (3 * MIB, 5)
    monkeypatch.setattr(projquota, "Kernel", lambda: kernel)
    monkeypatch.setattr(projquota, "device", lambda path: ("/dev/vdb", "xfs", {"prjquota"}))
    assert scratch.used_bytes(str(tmp_path), NAME) == 3 * MIB
    assert scratch.quota_usage(str(tmp_path), NAME) == (3 * MIB, 10 * MIB)
    got = quota_scratches(str(tmp_path))
    assert set(got) == {NAME} and (got[NAME].used, got[NAME].free) == (3 * MIB, 7 * MIB)
    assert scratch.used_bytes(str(tmp_path), "102_mt_f1-02.example.com") is None
    kernel.ids[target] = 42
    assert scratch.used_bytes(str(tmp_path), NAME) is None


def _mountinfo(tmp_path, fstype, options, source="/dev/vdb"):
    st = os.stat(tmp_path)
    path = tmp_path / "mountinfo"
    path.write_text(f"1 0 0:1 / / rw - tmpfs none rw\n"
                    f"22 1 {os.major(st.st_dev)}:{os.minor(st.st_dev)} / /var/lib/vac "
                    f"rw,relatime shared:1 - {fstype} {source} {options}\n")
    return str(path)


@pytest.mark.parametrize("fstype,options,source,why", [
    ("xfs", "rw,attr2,inode64,prjquota", "/dev/vdb", ""),
    ("xfs", "rw,attr2,inode64,pquota", "/dev/vdb", ""),
    ("ext4", "rw,prjquota", "/dev/vdb", "not xfs"),
    ("xfs", "rw,attr2,inode64,noquota", "/dev/vdb", "mounted without prjquota"),
    ("tmpfs", "rw", "tmpfs", "is on tmpfs, not xfs"),
    ("xfs", "rw,prjquota", "overlay", "no block device"),
])
def test_the_filesystem_probe(tmp_path, monkeypatch, fstype, options, source, why):
    monkeypatch.setattr(projquota.platform, "machine", lambda: "x86_64")
    asked = []
    kernel = FakeKernel()
    kernel.usage = lambda device, projid: asked.append((device, projid)) or (0, 0, 0)
    got = projquota.missing(str(tmp_path), kernel, _mountinfo(tmp_path, fstype, options, source))
    assert (why in got) if why else got == ""
    assert asked == ([] if why else [(source, FIRST)])


def test_the_probe_says_when_the_quota_cannot_be_read_or_the_ioctls_differ(tmp_path,
                                                                          monkeypatch):
    def off(device, projid):
        raise OSError(errno.ESRCH, "No such process")

    kernel = FakeKernel()
    kernel.usage = off
    info = _mountinfo(tmp_path, "xfs", "rw,prjquota")
    monkeypatch.setattr(projquota.platform, "machine", lambda: "x86_64")
    assert "cannot be read" in projquota.missing(str(tmp_path), kernel, info)
    monkeypatch.setattr(projquota.platform, "machine", lambda: "ppc64le")
    assert "not supported on ppc64le" in projquota.missing(str(tmp_path), kernel, info)


def test_the_range_is_vacs_only():
    assert not projquota.owned(0) and not projquota.owned(FIRST - 1)
    assert projquota.owned(FIRST) and projquota.owned(FIRST + projquota.ID_COUNT - 1)
    assert not projquota.owned(FIRST + projquota.ID_COUNT)


# vac doctor ----------------------------------------------------------------------------------

def test_doctor_names_the_quota_and_its_trial(make_config, monkeypatch):
    from vac.ops import scratchcheck

    config = make_config("[settings]\nvac_space = vac01.example.com\nfactory_name = "
                         "f1.example.com\ndisk_gb_per_processor = 5\n\n[machinetype dock]\n"
                         "machine_model = docker\nroot_image = docker://busybox\n"
                         "target_share = 1\n")
    chosen = scratch.Mechanism(scratch.QUOTA, "a directory per machine (x)")
    makers = []
    monkeypatch.setattr(scratch, "choose", lambda vg, **kw: chosen)
    monkeypatch.setattr(scratch, "trial", lambda state, maker=None: makers.append(maker) or 1)
    used = {"docker": list(config.machinetypes.values())}
    [line] = scratchcheck.host_scratch(config.settings, used)
    assert line.status == "ok" and isinstance(makers[0], ProjectQuota)
    assert line.detail.startswith("project-quota: a directory per machine (x); trial filled "
                                  "to ENOSPC;")
    assert line.detail.endswith("joboutputs/ capped at joboutputs_machine_mb 16 MiB by a "
                                "project quota")


def test_a_pool_without_a_block_device_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(projquota, "device", lambda path: ("overlay", "overlay", set()))
    with pytest.raises(scratch.ScratchError, match="no block device"):
        ProjectQuota(str(tmp_path), FakeKernel()).make(str(tmp_path), NAME, MIB)
    assert not os.path.exists(scratch.mount_point(str(tmp_path), NAME))


# joboutputs/ capped by a project quota --------------------------------------------------------

def _machine_dir(tmp_path):
    from vac.machine.directory import MachineDir

    path = tmp_path / "machines" / NAME
    (path / "joboutputs").mkdir(parents=True)
    return MachineDir(str(path))


def test_joboutputs_get_an_id_of_their_own_beside_the_scratch(tmp_path):
    kernel = FakeKernel()
    maker = _maker(tmp_path, kernel)
    scratch_dir = maker.make(str(tmp_path), NAME, 5 * MIB)
    d = _machine_dir(tmp_path)
    jobs = d.file("joboutputs")
    projid = maker.bound(jobs, 16 * MIB)
    assert projquota.owned(projid) and projid != kernel.ids[scratch_dir]
    assert kernel.ids[jobs] == projid and kernel.limits[projid] == 16 * MIB
    assert maker.bound(jobs, 16 * MIB) == projid          # adopted: the same ID, set again
    assert sorted(os.listdir(scratch.pool(str(tmp_path)))) == [".projquota.lock", NAME]


def test_a_failed_bound_says_which_directory(tmp_path):
    kernel = FakeKernel()
    kernel.fail_assign = True
    d = _machine_dir(tmp_path)
    with pytest.raises(scratch.ScratchError, match=f"cannot bound {d.file('joboutputs')} at"):
        _maker(tmp_path, kernel).bound(d.file("joboutputs"), MIB)


class FullUntilLifted:
    """XFS at a project's limit: every write into the directory fails with ENOSPC, root's
    too, until the limit is cleared."""

    def __init__(self, kernel, projid):
        self.kernel, self.projid = kernel, projid

    def __call__(self, real):
        def write(path, data, mode=0o644, mtime=None):
            if self.kernel.limits.get(self.projid):
                raise OSError(errno.ENOSPC, "No space left on device", path)
            real(path, data, mode=mode, mtime=mtime)
        return write


def test_vacd_lifts_a_full_joboutputs_limit_to_write_its_own_message(tmp_path, monkeypatch):
    from vac import fsutil
    from vac.machine import joboutputquota

    kernel = FakeKernel()
    d = _machine_dir(tmp_path)
    projid = _maker(tmp_path, kernel).bound(d.file("joboutputs"), MIB)
    monkeypatch.setattr(fsutil, "atomic_write", FullUntilLifted(kernel, projid)(
        fsutil.atomic_write))
    monkeypatch.setattr(projquota, "Kernel", lambda: kernel)
    monkeypatch.setattr(projquota, "device", lambda path, mountinfo=None: (
        "/dev/fake", "xfs", {"prjquota"}))
    assert d.write_shutdown_message_if_none("700 Vac: container killed by the OOM killer")
    assert d.shutdown_message == "700 Vac: container killed by the OOM killer"
    assert kernel.limits[projid] == 0
    assert not joboutputquota.lift(str(tmp_path))           # no ID of Vac's: nothing lifted


def test_a_full_joboutputs_without_an_id_of_vacs_still_fails(tmp_path, monkeypatch):
    from vac import fsutil

    kernel = FakeKernel()
    d = _machine_dir(tmp_path)

    def full(path, data, mode=0o644, mtime=None):
        raise OSError(errno.ENOSPC, "No space left on device", path)
    monkeypatch.setattr(fsutil, "atomic_write", full)
    monkeypatch.setattr(projquota, "Kernel", lambda: kernel)
    with pytest.raises(OSError, match="No space left"):
        d.write_shutdown_message_if_none("700 Vac: x")
