# SPDX-License-Identifier: BSD-2-Clause
"""LVM through an injected runner (fakelvm): the volume group read and its thin pool found,
thin and thick volumes made and removed with exactly LVM's argv, hostile output refused, the
volume group check asked of LVM (the default check, not a stub), the lvm-thin scratch
mechanism chosen or passed over saying why, a container's scratch on a thin volume, and the
removal of this factory's leftover volumes only (never another's, never a living machine's)."""
from __future__ import annotations

import dataclasses
import os
import stat

import pytest
from fakelvm import MIB, FakeLvm, FakeVolume

from vac import subp
from vac.errors import BackendError, ProcessError
from vac.host import lvm
from vac.machine import scratch, scratchlv
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record

FACTORY = "f1.example.com"
GB = 10 ** 9


@pytest.fixture
def fake() -> FakeLvm:
    return FakeLvm()


# Reading the group --------------------------------------------------------------------------

def test_the_group_is_read_with_its_volumes_and_pool(fake):
    fake.add_pool("vac_thin_pool", 100 * 4 * MIB, "25.00")
    fake.volumes["root"] = FakeVolume(50 * 4 * MIB)
    group = lvm.read_group("vg0", fake)
    assert (group.name, group.size, group.extent) == ("vg0", 1000 * 4 * MIB, 4 * MIB)
    assert group.volumes == {"root": 50 * 4 * MIB, "vac_thin_pool": 100 * 4 * MIB}
    assert group.pools() == ["vac_thin_pool"] and lvm.thin_pool(group) == "vac_thin_pool"
    assert group.pool_free("vac_thin_pool") == 75 * 4 * MIB
    assert fake.calls[0] == ["vgs", "--noheadings", "--units", "b", "--nosuffix",
                             "--separator", "|", "-o", "vg_size,vg_extent_size", "vg0"]
    assert fake.calls[1][-2:] == ["lv_name,lv_size,lv_attr,segtype,pool_lv,data_percent", "vg0"]


def test_which_thin_pool_vac_uses(fake):
    assert lvm.find_pool("vg0", fake) == (None, "volume group vg0 has no thin pool (make one: "
                                          "lvcreate --type thin-pool -L <size> -n "
                                          "vac_thin_pool vg0)")
    fake.add_pool("pool_a")
    assert lvm.find_pool("vg0", fake) == ("pool_a", "")          # the only one
    fake.add_pool("pool_b")
    pool, why = lvm.find_pool("vg0", fake)
    assert pool is None and "pool_a, pool_b" in why and "vac_thin_pool" in why
    fake.add_pool("vac_thin_pool")
    assert lvm.find_pool("vg0", fake) == ("vac_thin_pool", "")   # the one named for Vac
    assert lvm.find_pool("nosuchvg", fake)[0] is None
    assert "cannot read volume group nosuchvg" in lvm.find_pool("nosuchvg", fake)[1]


@pytest.mark.parametrize("out", ["  vac|12|-wi-a-----|linear|\n",          # a field short
                                 "  a|-5|-wi-a-----|linear||\n",            # negative size
                                 "  a|lots|-wi-a-----|linear||\n",
                                 "  t|8|twi-aotz--|thin-pool||250.00\n",    # over 100 %
                                 "  |8|-wi-a-----|linear||\n"])             # no name
def test_hostile_lvs_output_is_refused_not_guessed(fake, out):
    def run(argv, timeout, check=True):
        if argv[0] == "lvs":
            return subp.Completed(tuple(argv), 0, out, "")
        return fake(argv, timeout, check)

    with pytest.raises(lvm.LvmError, match="vg0"):
        lvm.read_group("vg0", run)


def test_names_that_are_not_lvm_names_run_nothing(fake):
    for bad in ("-all", "a b", "..", "x/y", "", "a" * 200, "vg\n0"):
        with pytest.raises(lvm.LvmError):
            lvm.read_group(bad, fake)
        assert not lvm.group_exists(bad, fake)
        with pytest.raises(lvm.LvmError):
            lvm.remove("vg0", bad, fake)
    assert fake.calls == []


# The volume group check: LVM's own reporting, the default check -------------------------------

def test_the_default_host_check_asks_vgs_so_an_empty_group_is_found(make_config, monkeypatch):
    """HostFacts' own vg_exists (not a stub): vac_volume_group holds no volume, so there is
    no /dev/vac_volume_group, and it is still the fallback of an unset volume_group; a set
    group LVM reports is accepted, one it does not report is rejected by name."""
    from vac.errors import ConfigError
    from vac.host.facts import HostFacts

    fake = FakeLvm(vg="vac_volume_group")
    monkeypatch.setattr(subp, "run", fake)
    monkeypatch.setattr(lvm.shutil, "which", lambda name: f"/usr/sbin/{name}")
    facts = HostFacts(fqdn=FACTORY, processors=4)       # vg_exists as vacd has it
    assert not os.path.exists("/dev/vac_volume_group")
    text = "[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
    assert make_config(text, host_facts=facts).settings.volume_group == "vac_volume_group"
    assert ["vgs", "--noheadings", "-o", "vg_name", "vac_volume_group"] in fake.calls
    given = make_config(text + "volume_group = vac_volume_group\n", host_facts=facts)
    assert given.settings.volume_group == "vac_volume_group"
    with pytest.raises(ConfigError, match="volume group 'vg_gone' does not exist"):
        make_config(text + "volume_group = vg_gone\n", host_facts=facts)


def test_without_lvm_tools_no_group_exists(monkeypatch):
    monkeypatch.setattr(lvm.shutil, "which", lambda name: None)
    monkeypatch.setattr(subp, "run", lambda *a, **k: pytest.fail("ran a command"))
    assert not lvm.group_exists("vac_volume_group")


# Making and removing volumes ------------------------------------------------------------------

def test_a_thin_volume_in_the_pool_and_a_thick_one_without(fake):
    fake.add_pool()
    group = lvm.read_group("vg0", fake)
    assert lvm.create(group, "f1-03.example.com", 8 * MIB, "vac_thin_pool", fake) == \
        "/dev/vg0/f1-03.example.com"
    assert fake.calls[-1] == ["lvcreate", "--yes", "--type", "thin", "--virtualsize",
                              f"{8 * MIB}b", "--name", "f1-03.example.com",
                              "vg0/vac_thin_pool"]
    assert fake.volumes["f1-03.example.com"].pool == "vac_thin_pool"
    lvm.create(group, "f1-04.example.com", 12 * MIB, None, fake)
    assert fake.calls[-1] == ["lvcreate", "--yes", "--wipesignatures", "y", "--name",
                              "f1-04.example.com", "--size", f"{12 * MIB}b", "vg0"]


def test_a_leftover_of_the_name_is_replaced(fake):
    fake.volumes["f1-03.example.com"] = FakeVolume(4 * MIB)
    group = lvm.read_group("vg0", fake)
    lvm.create(group, "f1-03.example.com", 8 * MIB, None, fake)
    assert [a[0] for a in fake.calls[-2:]] == ["lvremove", "lvcreate"]
    assert fake.volumes["f1-03.example.com"].size == 8 * MIB


def test_removal_of_a_missing_volume_is_no_error_but_a_busy_or_absent_lvremove_is(fake):
    assert not lvm.remove("vg0", "gone", fake)
    fake.volumes["busy"] = FakeVolume(4 * MIB)
    fake.busy.add("busy")
    with pytest.raises(lvm.LvmError, match="in use"):
        lvm.remove("vg0", "busy", fake)

    def absent(argv, timeout, check=True):
        raise ProcessError(argv, None, reason="not found")

    with pytest.raises(lvm.LvmError, match="lvremove: not found"):
        lvm.remove("vg0", "busy", absent)
    assert "busy" in fake.volumes


def test_vm_disks_are_thin_in_the_pool_else_thick(fake, make_config, monkeypatch):
    from vac.backends.libvirt import images

    monkeypatch.setattr(subp, "run", fake)
    text = ("[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
            "volume_group = vac_volume_group\ntotal_processors = 4\n")
    fake.vg = "vac_volume_group"
    settings = make_config(text).settings
    images.create_lv(settings, "f1-01.example.com", 1, None)
    share = 1 * (1000 * 4 * MIB) // 4
    assert fake.volumes["f1-01.example.com"] == FakeVolume(share)       # thick: VG / 4
    fake.add_pool(size=400 * 4 * MIB)
    images.create_lv(settings, "f1-02.example.com", 2, None)
    assert fake.volumes["f1-02.example.com"].pool == "vac_thin_pool"
    assert fake.volumes["f1-02.example.com"].size == 200 * 4 * MIB      # thin: pool x 2 / 4
    images.create_lv(settings, "f1-03.example.com", 1, 1)
    assert fake.volumes["f1-03.example.com"].size == GB // (4 * MIB) * 4 * MIB
    fake.fail.add("lvcreate")
    with pytest.raises(BackendError, match="cannot create logical volume"):
        images.create_lv(settings, "f1-04.example.com", 1, None)
    images.remove_lv("vac_volume_group", "f1-01.example.com")
    assert "f1-01.example.com" not in fake.volumes


# The mechanism ---------------------------------------------------------------------------------

def _which(missing=()):
    return lambda name: None if name in missing else f"/usr/sbin/{name}"


def _exists(missing=()):
    return lambda path: path not in missing


def test_lvm_thin_is_chosen_first_when_the_group_has_a_pool():
    m = scratch.choose("vg0", _which(), _exists(), lambda: 0,
                       lambda vg: ("vac_thin_pool", ""))
    assert (m.name, m.group, m.pool) == (scratch.LVM_THIN, "vg0", "vac_thin_pool")
    assert "thin LV per machine in vg0/vac_thin_pool" in m.detail


@pytest.mark.parametrize("vg, which, exists, euid, why", [
    (None, (), (), 0, "no volume_group"),
    ("vg0", ("lvcreate",), (), 0, "lvcreate not installed (lvm2)"),
    ("vg0", (), ("/dev/mapper/control",), 0, "this kernel has no device-mapper"),
    ("vg0", (), (), 0, "volume group vg0 has no thin pool (make one"),
])
def test_lvm_thin_passed_over_saying_why(vg, which, exists, euid, why):
    def no_pool(name):
        return None, "volume group vg0 has no thin pool (make one: lvcreate ...)"

    m = scratch.choose(vg, _which(which), _exists(exists), lambda: euid, no_pool)
    assert m.name == scratch.LOOP and f"not a thin LV: {why}" in m.detail


def test_not_root_is_neither_lvm_nor_loop():
    m = scratch.choose("vg0", _which(), _exists(), lambda: 1000,
                       lambda vg: pytest.fail("looked for a pool"))
    assert m.name == scratch.NONE and m.detail.startswith("vacd is not root")


def test_no_loop_devices_still_allows_lvm_thin():
    m = scratch.choose("vg0", _which(), _exists({"/dev/loop-control"}), lambda: 0,
                       lambda vg: ("p", ""))
    assert m.name == scratch.LVM_THIN


# A container's scratch on a thin volume -------------------------------------------------------

@pytest.fixture
def thin(fake):
    fake.add_pool()
    return scratchlv.ThinVolume("vg0", "vac_thin_pool", fake)


def test_scratch_on_a_thin_volume_named_as_the_machine_directory(paths, fake, thin):
    d = MachineDir.create(paths, 1000, "dock", "f1-00.example.com")
    target = scratch.create(paths.state_dir, d, 10 * MIB, thin)
    name = "1000_dock_f1-00.example.com"
    assert target == os.path.join(paths.state_dir, "scratch", name)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o1777
    assert fake.volumes[name].size == 12 * MIB                  # whole 4 MiB extents, up
    dev = f"/dev/vg0/{name}"
    assert fake.commands("mkfs.ext4") == [scratch.MKFS + [dev]]
    assert fake.commands("mount") == [["mount", "-t", "ext4", "-o", "nosuid,nodev,discard",
                                       dev, target]]
    assert d.read(scratch.MJF_KEY) == str(10 * MIB)
    assert scratch.remove(paths.state_dir, name, thin)
    assert name not in fake.volumes and not os.path.exists(target)
    assert not scratch.remove(paths.state_dir, name, thin)      # nothing left to remove


def test_a_failed_mkfs_leaves_no_volume_and_no_mount_point(paths, fake, thin):
    d = MachineDir.create(paths, 1000, "dock", "f1-00.example.com")
    fake.fail.add("mkfs.ext4")
    with pytest.raises(scratch.ScratchError, match="thin volume of vg0/vac_thin_pool"):
        scratch.create(paths.state_dir, d, 10 * MIB, thin)
    assert list(fake.volumes) == ["vac_thin_pool"]
    assert os.listdir(scratch.pool(paths.state_dir)) == []


def test_a_full_pool_fails_the_creation_cleanly(paths, fake, thin):
    d = MachineDir.create(paths, 1000, "dock", "f1-00.example.com")
    fake.fail.add("lvcreate")
    with pytest.raises(scratch.ScratchError, match="lvcreate"):
        scratch.create(paths.state_dir, d, 10 * MIB, thin)
    assert os.listdir(scratch.pool(paths.state_dir)) == []


# Leftovers: this factory's only, never a living machine's ------------------------------------

VMS = ("cernvm3", "cernvm4", "vm-raw")


def _machine(paths, created, name, finished=False, record=True, model="docker"):
    d = MachineDir.create(paths, created, "dock", name)
    if record:
        write_slot_record(paths, name, SlotRecord(created, "dock", model))
    if finished:
        with open(d.file("finished"), "w") as f:
            f.write(f"{created + 10}\n")
    return d


def test_leftover_volumes_of_this_factory_are_removed_and_no_others(paths, fake):
    fake.add_pool()
    _machine(paths, 1000, "f1-00.example.com", model="vm-raw")          # running VM
    _machine(paths, 1000, "f1-01.example.com", finished=True, model="cernvm4")
    _machine(paths, 1001, "f1-04.example.com")                          # running container
    _machine(paths, 1002, "f1-03.example.com", finished=True, record=False)
    _machine(paths, 1003, "f1-06.example.com")        # a container: the slot's LV not its
    adopted = _machine(paths, 1004, "f1-07.example.com")               # the original's
    adopted.write_backend_record({"backend": "docker", "adopted": "vac03"})
    ours = ["f1-00.example.com", "f1-01.example.com", "f1-02.example.com",
            "1001_dock_f1-04.example.com", "1002_dock_f1-03.example.com",
            "999_dock_f1-05.example.com", "f1-06.example.com", "f1-07.example.com"]
    others = ["f2-01.example.com", "g1-01.example.com", "f1-01.example.org", "root",
              "f1-1.example.com", "1000_dock_f2-01.example.com", "1000_dock_f1-1.example.com",
              "x_dock_f1-01.example.com", "f1-01.example.com.bak"]
    for name in ours + others:
        fake.volumes[name] = FakeVolume(4 * MIB)
    released = scratchlv.release_leftovers(paths, FACTORY, "vg0", VMS, fake)
    assert sorted(released) == ["1002_dock_f1-03.example.com", "999_dock_f1-05.example.com",
                                "f1-01.example.com", "f1-02.example.com", "f1-06.example.com"]
    assert sorted(fake.volumes) == sorted(["f1-00.example.com", "1001_dock_f1-04.example.com",
                                           "f1-07.example.com", "vac_thin_pool"] + others)


def test_a_busy_leftover_is_kept_for_next_time_and_the_others_go(paths, fake):
    for name in ("f1-01.example.com", "f1-02.example.com"):
        fake.volumes[name] = FakeVolume(4 * MIB)
    fake.busy.add("f1-01.example.com")
    assert scratchlv.release_leftovers(paths, FACTORY, "vg0", VMS, fake) == \
        ["f1-02.example.com"]
    fake.busy.clear()
    assert scratchlv.release_leftovers(paths, FACTORY, "vg0", VMS, fake) == \
        ["f1-01.example.com"]


def test_an_unreadable_group_removes_nothing(paths, fake):
    assert scratchlv.release_leftovers(paths, FACTORY, "othervg", VMS, fake) == []
    assert fake.commands("lvremove") == []


def test_the_cycle_sweep_needs_a_volume_group_and_lvm(paths, fake, make_config, monkeypatch):
    from vac.backends import scratchmount

    monkeypatch.setattr(subp, "run", fake)
    fake.vg = "vac_volume_group"
    fake.volumes["f1-02.example.com"] = FakeVolume(4 * MIB)
    text = "[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
    settings = make_config(text).settings
    monkeypatch.setattr(lvm, "missing", lambda *a: "this kernel has no device-mapper")
    assert scratchmount.release_volumes(settings, FACTORY) == [] and fake.calls == []
    monkeypatch.setattr(lvm, "missing", lambda *a: "")
    none = dataclasses.replace(settings, volume_group=None)
    assert scratchmount.release_volumes(none, FACTORY) == [] and fake.calls == []
    assert scratchmount.release_volumes(settings, FACTORY) == ["f1-02.example.com"]


def test_a_control_node_without_the_driver_is_no_device_mapper(monkeypatch):
    """The node can be there (made by a package) on a kernel without device-mapper: it must
    open, not merely exist."""
    import errno

    def no_driver(path, flags):
        assert path == lvm.MAPPER_CONTROL
        raise OSError(errno.ENODEV, "No such device", path)

    monkeypatch.setattr(lvm.os, "open", no_driver)
    assert not lvm.device_mapper()
    assert lvm.missing(_which()) == "this kernel has no device-mapper (/dev/mapper/control)"
    m = scratch.choose("vg0", _which(), None, lambda: 0, lambda vg: ("p", ""))
    assert m.name != scratch.LVM_THIN and "no device-mapper" in m.detail


def test_a_container_backends_scratch_on_lvm_thin_is_made_and_removed(paths, fake,
                                                                      make_config,
                                                                      monkeypatch):
    """scratchmount, as the Docker, Podman and Apptainer backends call it, with the lvm-thin
    mechanism: the machine directory's thin volume made and mounted, then removed with the
    machine; a failure after it (the capped joboutputs) removes it again."""
    import types

    from vac.backends import scratchmount
    from vac.machine import joboutputcap

    fake.vg = "vac_volume_group"
    fake.add_pool()
    monkeypatch.setattr(subp, "run", fake)
    monkeypatch.setitem(scratchmount._chosen, "vac_volume_group", scratch.Mechanism(
        scratch.LVM_THIN, "thin", "vac_volume_group", "vac_thin_pool"))
    monkeypatch.setattr(joboutputcap, "make", lambda state, directory, size: None)
    monkeypatch.setattr(joboutputcap, "release", lambda directory: False)
    text = "[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
    settings = make_config(text).settings
    assert settings.volume_group == "vac_volume_group"
    d = MachineDir.create(paths, 1000, "dock", "f1-00.example.com")
    spec = types.SimpleNamespace(settings=settings, processors=2, directory=d,
                                 name="f1-00.example.com",
                                 machinetype=types.SimpleNamespace(disk_gb_per_processor=1))
    area = scratchmount.make(spec, "docker")
    name = "1000_dock_f1-00.example.com"
    assert area == scratch.mount_point(paths.state_dir, name)
    assert fake.volumes[name].pool == "vac_thin_pool" and fake.volumes[name].size >= 2 * GB
    assert scratchmount.remove(settings, d, "docker")
    assert name not in fake.volumes and not os.path.exists(area)

    def full(state, directory, size):
        raise scratch.ScratchError("no room for joboutputs")

    monkeypatch.setattr(joboutputcap, "make", full)
    with pytest.raises(BackendError, match="no room for joboutputs"):
        scratchmount.make(spec, "docker")
    assert list(fake.volumes) == ["vac_thin_pool"] and not os.path.exists(area)
