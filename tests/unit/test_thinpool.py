# SPDX-License-Identifier: BSD-2-Clause
"""The thin pool as admission by free disk space sees it (vac.machine.thinpool): read through
LVM (a fake runner here: this host's kernel has no device-mapper), watched as the place where
the scratch grows, with the room of its other thin volumes (VM disks) counted in it."""
from __future__ import annotations

import os

import pytest
from fakelvm import MIB, FakeLvm, FakeVolume

from vac.backends.base import SCRATCH_VOLUME
from vac.cycle import diskgate, hostdisk
from vac.host import diskspace, lvm
from vac.machine import scratch, thinpool
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record

THIN = scratch.Mechanism(scratch.LVM_THIN, "test", "vg0", "vac_thin_pool")
LOOP = scratch.Mechanism(scratch.LOOP, "test")


def group_with_volumes() -> FakeLvm:
    fake = FakeLvm()
    fake.add_pool(size=400 * MIB, percent="25.00")          # 300 MiB not given to volumes
    # A mounted container scratch of 200 MiB, a tenth given; a VM's thin disk of 100 MiB,
    # 40 % given; a plain LV and another pool's volume, which the pool does not hold.
    fake.volumes["1700000000_a_f1-00.example.com"] = FakeVolume(
        200 * MIB, "Vwi-aotz--", "thin", "vac_thin_pool", "10.00")
    fake.volumes["f1-01.example.com"] = FakeVolume(100 * MIB, "Vwi-aotz--", "thin",
                                                   "vac_thin_pool", "40.00")
    fake.volumes["home"] = FakeVolume(50 * MIB)
    return fake


def test_the_pool_is_read_through_lvm_with_its_other_volumes_room(tmp_path):
    pool_dir = str(tmp_path / "scratch")
    mounts = [os.path.join(pool_dir, "1700000000_a_f1-00.example.com"), "/proc"]
    got = thinpool.reading(THIN, pool_dir, mounts, run=group_with_volumes())
    fs = got.filesystem
    assert fs.names == (diskspace.THIN,) and fs.path == "vg0/vac_thin_pool"
    assert fs.total == 400 * MIB and fs.free == 300 * MIB
    assert fs.scratch
    # The mounted scratch's room is counted inside it (as for the loop mechanism), so only
    # the VM disk's 60 MiB not yet given is the pool's own growth.
    assert fs.growth == 60 * MIB
    # The same reading says what each of the pool's thin volumes has been given.
    assert got.given == {"1700000000_a_f1-00.example.com": 20 * MIB,
                         "f1-01.example.com": 40 * MIB}


def test_no_pool_unless_the_scratch_is_made_in_one(tmp_path):
    fake = group_with_volumes()
    assert thinpool.reading(LOOP, str(tmp_path), [], run=fake) is None
    assert fake.calls == []       # LVM not even asked


def test_a_pool_lvm_does_not_report_is_an_error_naming_it(tmp_path):
    fake = FakeLvm()
    with pytest.raises(lvm.LvmError, match="no thin pool vac_thin_pool"):
        thinpool.reading(THIN, str(tmp_path), [], run=fake)


CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
disk_floor_gb = 0.1
disk_floor_fraction = 0

[machinetype a]
machine_model = fake
target_share = 1
"""


def test_the_gate_counts_the_scratch_against_the_pool_not_the_mount_points_filesystem(
        tmp_path, monkeypatch, make_config):
    """With lvm-thin the state directory's filesystem holds only the mount points: a full
    pool stops creation, a full pool directory's filesystem stops it only below its floor."""
    state = tmp_path / "state"
    (state / "scratch").mkdir(parents=True)
    full = FakeLvm()
    full.add_pool(size=4 * 10 ** 9, percent="99.00")        # 40 MB left of 4 GB
    real = lvm.read_group
    monkeypatch.setattr(thinpool.lvm, "read_group", lambda vg, run=None: real(vg, full))
    reading = hostdisk.read_with_pool(str(state), THIN, [], [])
    [pool] = [f for f in reading.filesystems if diskspace.THIN in f.names]
    assert pool.scratch and not any(f.scratch for f in reading.filesystems if f is not pool)
    why = diskgate.Budget(make_config(CONF).settings, reading).stop()
    assert why is not None and "thin pool vg0/vac_thin_pool" in why.text


def test_a_pool_that_cannot_be_read_leaves_the_rest_watched(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()

    def broken(vg, run=None):
        raise lvm.LvmError("cannot read volume group vg0: vgs failed")
    monkeypatch.setattr(thinpool.lvm, "read_group", broken)
    reading = hostdisk.read_with_pool(str(state), THIN, [], [])
    assert [f.names[0] for f in reading.filesystems] == [diskspace.STATE]
    assert reading.problems == ("thin pool vg0/vac_thin_pool: cannot read volume group vg0: "
                                "vgs failed",)


def test_a_vms_thin_scratch_volume_is_its_scratch_bytes(tmp_path, monkeypatch, make_config):
    """What the thin pool has given a VM's scratch volume (named as its slot) is the scratch
    bytes of the machine its slot record names, read in the pool's one reading; a VM whose
    volume is its root disk (a CernVM's: its backend record does not say scratch) and a
    container's scratch volume (named as its machine directory, counted where it is
    mounted) are not."""
    config = make_config(CONF)
    paths = config.settings.paths
    fake = group_with_volumes()
    fake.volumes["f1-02.example.com"] = FakeVolume(100 * MIB, "Vwi-aotz--", "thin",
                                                   "vac_thin_pool", "70.00")
    dirs = {}
    for name, record in (("f1-01.example.com", {SCRATCH_VOLUME: True}),
                         ("f1-02.example.com", {SCRATCH_VOLUME: False})):
        dirs[name] = MachineDir.create(paths, 1_700_000_000, "a", name)
        write_slot_record(paths, name, SlotRecord(1_700_000_000, "a", "vm-raw"))
        dirs[name].write_backend_record({"backend": "libvirt", **record})
    real = lvm.read_group
    monkeypatch.setattr(thinpool.lvm, "read_group", lambda vg, run=None: real(vg, fake))
    monkeypatch.setattr(hostdisk.scratchmount, "mechanism", lambda vg, state: THIN)
    disk = hostdisk.HostDisk()
    disk.inputs(config, None)
    assert disk.scratch_bytes(os.path.basename(dirs["f1-01.example.com"].path)) == 40 * MIB
    assert disk.scratch_bytes(os.path.basename(dirs["f1-02.example.com"].path)) is None
    assert disk.scratch_bytes("1700000000_a_f1-00.example.com") is None
    assert len(fake.commands("lvs")) == 1      # the pool and its volumes read once
