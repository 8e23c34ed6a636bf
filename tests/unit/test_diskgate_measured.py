# SPDX-License-Identifier: BSD-2-Clause
"""The disk as measured for people: the reading in plan.json (written by the planner's plan,
read back with guards), the Prometheus gauges of each watched filesystem, `vac doctor`'s
disk line, ok with each filesystem's figures and warn in the words of the idle reason when
creation stops for free space, and the status page's filesystems and machines' scratch."""
from __future__ import annotations

import pytest

from vac import planfile
from vac.cycle import diskgate
from vac.host.diskspace import DiskReading, Filesystem, Scratch
from vac.ops import diskcheck
from vac.ops.checks import OK, WARN

GB = 10 ** 9
NOW = 1_700_000_000.0
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 4
disk_floor_gb = 5
disk_floor_fraction = 0.05

[machinetype a]
machine_model = fake
target_share = 1
"""


def reading() -> DiskReading:
    return DiskReading((Filesystem(("state directory", "scratch pool"), "/var/lib/vac",
                                   30 * GB, 100 * GB, scratch=True),
                        Filesystem(("Docker data root",), "/data/docker", 8 * GB, 40 * GB)),
                       {"m1": Scratch(used=3 * GB, free=7 * GB)})


def test_the_reading_as_data_round_trips_through_plan_json(make_config, tmp_path):
    settings = make_config(CONF).settings
    data = diskgate.as_dict(settings, reading())
    assert data["filesystems"][0] == {
        "path": "/var/lib/vac", "holds": ["state directory", "scratch pool"],
        "free_bytes": 30 * GB, "size_bytes": 100 * GB, "floor_bytes": 5 * GB,
        "growth_bytes": 0, "scratch": True}
    assert data["scratch_growth_bytes"] == 7 * GB and data["scratch_used_bytes"] == {"m1": 3 * GB}
    path = str(tmp_path / "plan.json")
    planfile.write(path, planfile.PlanRecord(time=NOW, disk=data))
    assert planfile.read(path).disk == data
    assert diskgate.as_dict(settings, None) is None


@pytest.mark.parametrize("hostile", [
    "nonsense", {"filesystems": "x"}, {"filesystems": [1, {"path": 3}]},
    {"filesystems": [{"path": "/x", "free_bytes": -1, "size_bytes": True, "holds": [1, "a"]}],
     "scratch_used_bytes": {"m": "big", "n": 4}}])
def test_a_hostile_disk_record_is_read_with_guards(tmp_path, hostile):
    path = tmp_path / "plan.json"
    path.write_text(planfile.json.dumps({"time": NOW, "disk": hostile}))
    disk = planfile.read(str(path)).disk
    if disk is None:
        return
    for fs in disk["filesystems"]:
        assert isinstance(fs["path"], str) and fs["free_bytes"] is None \
            and fs["size_bytes"] is None and fs["holds"] == ["a"]
    assert disk["scratch_used_bytes"] in ({}, {"n": 4})


def test_metrics_have_each_watched_filesystem(make_config):
    pytest.importorskip("prometheus_client")
    from vac.web.scratchmetrics import disk_families

    settings = make_config(CONF).settings
    record = planfile.PlanRecord(time=NOW, disk=diskgate.as_dict(settings, reading()))
    free, size, floor, growth = disk_families(record)
    assert [(x.labels, x.value) for x in free.samples] == [
        ({"path": "/var/lib/vac", "holds": "state directory,scratch pool"}, 30e9),
        ({"path": "/data/docker", "holds": "Docker data root"}, 8e9)]
    assert [x.value for x in size.samples] == [100e9, 40e9]
    assert [x.value for x in floor.samples] == [5e9, 5e9]
    assert [x.value for x in growth.samples] == [7e9]
    assert [len(f.samples) for f in disk_families(None)] == [0, 0, 0, 0]


def test_doctor_says_each_filesystems_free_space_and_warns_when_creation_stops(
        make_config, monkeypatch):
    settings = make_config(CONF).settings
    monkeypatch.setattr(diskcheck.diskspace, "read", lambda *a, **k: reading())
    [line] = diskcheck.host_disk(settings)
    assert line.status == OK
    assert "state directory and scratch pool /var/lib/vac: 30.0 GB free of 100.0 GB " \
           "(floor 5.0 GB)" in line.detail and "Docker data root /data/docker" in line.detail
    short = DiskReading((Filesystem(("state directory",), "/var/lib/vac", 2 * GB, 100 * GB,
                                    scratch=True),))
    monkeypatch.setattr(diskcheck.diskspace, "read", lambda *a, **k: short)
    [line] = diskcheck.host_disk(settings)
    assert line.status == WARN and line.detail.startswith(
        "creation stops now: disk: state directory /var/lib/vac has 2.0 GB free")
    assert "disk_floor_gb" in line.fix


def test_doctor_on_the_real_state_directory(make_config):
    [line] = diskcheck.host_disk(make_config(CONF).settings)
    assert line.name == "disk"
    assert "GB free of" in line.detail or line.detail.startswith("creation stops now")


def test_the_status_page_shows_each_filesystem_and_each_machines_scratch(world):
    import dataclasses

    from fakeclock import T0

    from vac.web import statuspages
    from vac.web.status import factory_view

    w = world()
    w.run()
    config = w.load()
    path = config.settings.paths.plan
    view = factory_view(config, now=T0)
    running = [c for c in view["slots"] if c["state"] == "running"]
    assert running and view["disk"] == {"available": False, "growth_bytes": None, "rows": []}
    data = diskgate.as_dict(config.settings, reading())
    data["scratch_used_bytes"] = {running[0]["machine"]: 1_500_000_000}
    why = planfile.IdleReason(planfile.DISK, "disk: ...", resource="/data/docker", value=8e9)
    planfile.write(path, dataclasses.replace(planfile.read(path), disk=data,
                                             idle={"f1-03.example.com": why}))
    view = factory_view(config, now=T0)
    disk = view["disk"]
    assert disk["available"] and disk["growth_bytes"] == 7 * GB
    assert [(r["path"], r["short"]) for r in disk["rows"]] == \
        [("/var/lib/vac", False), ("/data/docker", True)]
    cells = {c["machine"]: c for c in view["slots"] if c["machine"]}
    assert cells[running[0]["machine"]]["scratch_bytes"] == 1_500_000_000
    assert all(c["scratch_bytes"] is None for c in view["slots"]
               if c["machine"] != running[0]["machine"])
    html = statuspages.factory_page(view, 30)
    assert 'data-path="/data/docker" class="backoff"' in html and "8.0 GB" in html
    assert "scratch 1.5 GB" in html


def test_vac_slots_json_cycle_has_the_disk_reading(make_config, paths):
    from vac import slotview

    settings = make_config(CONF).settings
    data = diskgate.as_dict(settings, reading())
    assert slotview.cycle_summary(paths, planfile.PlanRecord(time=NOW, disk=data))["disk"] == data
    assert "disk" not in slotview.cycle_summary(paths, planfile.PlanRecord(time=NOW))
