# SPDX-License-Identifier: BSD-2-Clause
"""A container machine's scratch: the mechanism chosen per host best first and why,
the size, the mountinfo reading, the leftovers of this factory only; the docker mounts."""
from __future__ import annotations

import os

import pytest

from vac.backends.docker.spec import bind, with_scratch
from vac.machine import scratch

FACTORY = "f1.example.com"


def _which(missing=()):
    return lambda name: None if name in missing else f"/usr/sbin/{name}"


def _exists(missing=()):
    return lambda path: path not in missing


def test_loop_chosen_where_there_is_no_device_mapper_and_says_why_not_lvm():
    m = scratch.choose("vg0", _which(), _exists({"/dev/mapper/control"}), lambda: 0)
    assert m.name == scratch.LOOP
    assert "not a thin LV: this kernel has no device-mapper" in m.detail
    m = scratch.choose(None, _which(), _exists(), lambda: 0)
    assert m.name == scratch.LOOP and "no volume_group" in m.detail


def test_none_names_every_reason():
    m = scratch.choose(None, _which({"mkfs.ext4"}), _exists(), lambda: 0)
    assert m.name == scratch.NONE
    assert "mkfs.ext4 not installed" in m.detail and "project quota" in m.detail
    assert "vacd is not root" in scratch.choose(None, _which(), _exists(), lambda: 1000).detail
    assert "/dev/loop-control" in scratch.choose(
        None, _which(), _exists({"/dev/loop-control"}), lambda: 0).detail


def test_size_is_gb_per_processor_times_processors_machinetype_first():
    assert scratch.limit_bytes(None, None, 4) is None
    assert scratch.limit_bytes(None, 10, 4) == 40 * 10 ** 9
    assert scratch.limit_bytes(2, 10, 3) == 6 * 10 ** 9
    assert scratch.limit_bytes(0, 10, 3) == scratch.MIN_BYTES


def test_mountinfo_mount_points_with_escapes(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("36 35 98:0 / /mnt/a\\040b rw - ext4 /dev/loop0 rw\n"
                    "37 35 98:1 / /var/lib/vac/scratch/x rw - ext4 /dev/loop1 rw\n")
    assert scratch.mounted(str(info)) == ["/mnt/a b", "/var/lib/vac/scratch/x"]
    assert scratch.is_mounted("/var/lib/vac/scratch/x", str(info))
    assert not scratch.is_mounted("/var/lib/vac/scratch", str(info))
    assert scratch.mounted(str(tmp_path / "absent")) == []


def test_leftovers_of_this_factory_finished_or_gone_only(tmp_path):
    state = str(tmp_path)
    pool = scratch.pool(state)
    os.makedirs(pool)
    names = {"gone": "100_mt_f1-00.example.com", "finished": "101_mt_f1-01.example.com",
             "living": "102_mt_f1-02.example.com", "other": "103_mt_g1-00.example.com",
             "odd": "not-a-machine"}
    for name in names.values():
        os.mkdir(os.path.join(pool, name))
    open(os.path.join(pool, names["gone"] + scratch.IMAGE_SUFFIX), "w").close()
    for key in ("finished", "living"):
        os.makedirs(os.path.join(state, "machines", names[key]))
    open(os.path.join(state, "machines", names["finished"], "finished"), "w").close()
    assert scratch.release_leftovers(state, FACTORY) == [names["gone"], names["finished"]]
    assert sorted(os.listdir(pool)) == sorted([names["living"], names["other"], names["odd"]])
    assert scratch.release_leftovers(state, FACTORY) == []
    assert scratch.release_leftovers(str(tmp_path / "nothing"), FACTORY) == []


def test_docker_scratch_replaces_a_tmp_binds_of_the_same_path():
    mounts = [bind("/m/joboutputs", "/var/spool/joboutputs", False),
              bind("/m/mnt/_scratchX", "/scratch", False)]
    assert with_scratch(mounts, None, "/scratch") == mounts
    got = with_scratch(mounts, "/var/lib/vac/scratch/m", "/scratch")
    assert got == [mounts[0], bind("/var/lib/vac/scratch/m", "/scratch", False)]


# vac doctor's line ---------------------------------------------------------------------------

DOCTOR_CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
{settings}

[machinetype dock]
machine_model = docker
root_image = docker://busybox
target_share = 1
{machinetype}
"""


def _doctor(make_config, monkeypatch, settings="", machinetype="", chosen=None, trial=None):
    from vac.ops import scratchcheck

    config = make_config(DOCTOR_CONF.format(settings=settings, machinetype=machinetype))
    if chosen is not None:
        monkeypatch.setattr(scratch, "choose", lambda vg, **kw: chosen)
    if trial is not None:
        monkeypatch.setattr(scratch, "trial", trial)
    used = {"docker": list(config.machinetypes.values())}
    [line] = scratchcheck.host_scratch(config.settings, used)
    return line


def test_doctor_says_no_scratch_asked(make_config, monkeypatch):
    line = _doctor(make_config, monkeypatch)
    assert line.status == "ok" and "no container machinetype sets" in line.detail


def test_doctor_names_the_mechanism_after_a_trial(make_config, monkeypatch):
    tried = []
    line = _doctor(make_config, monkeypatch, machinetype="disk_gb_per_processor = 5",
                   chosen=scratch.Mechanism(scratch.LOOP, "ext4 in a file (not a thin LV: x)"),
                   trial=lambda state, maker=None: tried.append(state) or 1)
    assert line.status == "ok" and tried
    assert line.detail.startswith("loop: ext4 in a file (not a thin LV: x); trial filled")
    assert "for dock at /scratch" in line.detail
    assert line.detail.endswith("joboutputs/ capped at joboutputs_machine_mb 16 MiB") or \
        "not capped (no tune2fs" in line.detail


def test_doctor_fails_a_failed_trial_and_warns_without_mechanism(make_config, monkeypatch):
    def broken(state, maker=None):
        raise scratch.ScratchError("mount: permission denied")

    line = _doctor(make_config, monkeypatch, settings="disk_gb_per_processor = 5",
                   chosen=scratch.Mechanism(scratch.LOOP, "x"), trial=broken)
    assert line.status == "FAIL" and "mount: permission denied" in line.detail
    line = _doctor(make_config, monkeypatch, machinetype="disk_gb_per_processor = 5",
                   chosen=scratch.Mechanism(scratch.NONE, "vacd is not root"))
    assert line.status == "warn" and "vacd is not root" in line.detail and line.fix


# The volume group check: LVM's own reporting, not /dev/<vg> ----------------------------------

def test_volume_group_exists_asks_lvm_not_dev():
    from vac.errors import ProcessError
    from vac.host.facts import volume_group_exists
    from vac.subp import Completed

    asked = []

    def vgs(out, rc=0):
        def run(argv, timeout, check):
            asked.append(argv)
            return Completed(tuple(argv), rc, out, "")
        return run

    assert volume_group_exists("vg_empty", vgs("  vg_empty\n"))   # no LV: no /dev/vg_empty
    assert asked[-1] == ["vgs", "--noheadings", "-o", "vg_name", "vg_empty"]
    assert not volume_group_exists("vg0", vgs("", 5))
    assert not volume_group_exists("vg", vgs("  vg0\n"))

    def missing(argv, timeout, check):
        raise ProcessError(argv, None, reason="not found")

    assert not volume_group_exists("vg0", missing)
    assert not volume_group_exists("--all", vgs("  x\n")) and not volume_group_exists("", missing)


def test_an_empty_vac_volume_group_is_still_the_fallback(make_config, host):
    """LVM reports vac_volume_group though it holds no LV (so there is no
    /dev/vac_volume_group): an unset volume_group falls back to it, a set one is accepted,
    and a group LVM does not report is rejected by name."""
    import dataclasses
    import functools

    from vac.errors import ConfigError
    from vac.host.facts import volume_group_exists
    from vac.subp import Completed

    def run(argv, timeout, check):
        known = argv[-1] == "vac_volume_group"
        return Completed(tuple(argv), 0 if known else 5, f"  {argv[-1]}\n" if known else "",
                         "" if known else f"  Volume group \"{argv[-1]}\" not found")

    facts = dataclasses.replace(host, vg_exists=functools.partial(volume_group_exists, run=run))
    assert not os.path.exists("/dev/vac_volume_group")
    text = "[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
    assert make_config(text, host_facts=facts).settings.volume_group == "vac_volume_group"
    given = make_config(text + "volume_group = vac_volume_group\n", host_facts=facts)
    assert given.settings.volume_group == "vac_volume_group"
    with pytest.raises(ConfigError, match="vg_gone"):
        make_config(text + "volume_group = vg_gone\n", host_facts=facts)


# Measured: vac slots shows a running container's scratch ------------------------------------

def test_slot_row_has_the_scratch_used_and_its_limit(paths):
    from vac import slotview
    from vac.machine.directory import MachineDir

    d = MachineDir.create(paths, 1000, "dock", "f1-00.example.com")
    row = {"scratch_bytes": None, "scratch_limit_bytes": None}
    assert slotview._scratch(d, row) == "" and row["scratch_bytes"] is None    # none mounted
    os.makedirs(d.file("jobfeatures"), exist_ok=True)
    d.write(scratch.MJF_KEY, str(4 * 10 ** 9))
    d.write_heartbeat(10.0, now=1100.0)                      # a heartbeat without a scratch
    assert slotview._scratch(d, row) == "" and row["scratch_bytes"] is None
    d.write_heartbeat(12.0, now=1200.0, scratch=1_500_000_000)   # as the cycle measured it
    assert slotview._scratch(d, row) == ", scratch 1.5 of 4.0 GB"
    assert row == {"scratch_bytes": 1_500_000_000, "scratch_limit_bytes": 4 * 10 ** 9}


def test_metrics_have_each_machines_scratch_and_the_pools_free_space(make_config, paths):
    pytest.importorskip("prometheus_client")
    from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
    from vac.web.scratchmetrics import scratch_families

    config = make_config(DOCTOR_CONF.format(settings="", machinetype=""))
    s = config.settings
    name = "f1-00.example.com"
    write_slot_record(s.paths, name, SlotRecord(1000, "dock", "docker"))
    d = MachineDir.create(s.paths, 1000, "dock", name)
    os.makedirs(d.file("jobfeatures"), exist_ok=True)
    d.write(scratch.MJF_KEY, str(2 * 10 ** 9))
    d.write_heartbeat(3.0, now=1100.0, scratch=12345)       # the used bytes, as last measured
    used, limit, free = scratch_families(config)
    assert [(x.labels, x.value) for x in used.samples] == \
        [({"slot": name, "machinetype": "dock"}, 12345.0)]
    assert [x.value for x in limit.samples] == [2e9]
    assert free.samples[0].value > 0
    assert [len(f.samples) for f in scratch_families(None)] == [0, 0, 0]
