# SPDX-License-Identifier: BSD-2-Clause
"""Each machine's own pressure (vac.host.machinepressure, vac.cycle.machinepressure): read from
a synthetic cgroup v2 tree (a tmp directory with *.pressure files), recorded in the machine's
directory, shown by `vac slots`, the status page's cells and the metrics; absent (never 0) on
cgroup v1, with PSI off, or where the backend names no cgroup; a record not in its shape is
absent too. The VM's machine scope is found from QEMU's pid file."""
from __future__ import annotations

import json
import logging
import os
import time

import pytest

from vac import slotview
from vac.backends.libvirt import scope
from vac.cycle.machinepressure import MachinePressureRecorder
from vac.cycle.observe import Observation
from vac.host import cgroups, machinepressure
from vac.host.machinepressure import RECORD, MachinePressures
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.web import statuspages
from vac.web.pressuremetrics import machine_pressure_families
from vac.web.status import _cell, factory_view

NOW = 1796544000
SLOT = "f1-00.example.com"
CGROUP = "/vac/docker-1796544000_alpha_f1-00"


def _stall(some, full, total):
    return (f"some avg10={some:.2f} avg60=1.00 avg300=0.50 total={total}\n"
            f"full avg10={full:.2f} avg60=0.50 avg300=0.25 total={total // 2}\n")


def _tree(tmp_path, cgroup=CGROUP, cpu=(1.0, 0.5, 1000000), memory=(20.0, 10.0, 3000000),
          io=(5.0, 2.5, 2000000)):
    """A cgroup2 mount at tmp_path/cg with the machine's cgroup and its pressure files."""
    directory = tmp_path / "cg" / cgroup.lstrip("/")
    directory.mkdir(parents=True, exist_ok=True)
    for name, values in (("cpu", cpu), ("memory", memory), ("io", io)):
        (directory / f"{name}.pressure").write_text(_stall(*values))
    return cgroups.Hierarchies(v2=cgroups.Mount("/", str(tmp_path / "cg")))


def test_a_machines_cgroup_pressure_and_the_stall_since_the_last_reading(tmp_path):
    found = MachinePressures(_tree(tmp_path))
    first = found.read("m1", CGROUP, 100.0)
    assert first.stalls["memory"].some.avg10 == 20.0
    assert first.stalls["io"].full.avg10 == 2.5
    assert first.since_last == {}
    _tree(tmp_path, memory=(30.0, 15.0, 5000000))
    second = found.read("m1", CGROUP, 160.0)
    assert second.since_last[("memory", "some")] == pytest.approx(2.0)
    assert second.since_last[("cpu", "some")] == 0.0
    assert second.interval == 60.0


def test_no_cgroup2_mount_no_files_or_no_cgroup_named_is_no_reading(tmp_path):
    assert MachinePressures(cgroups.Hierarchies()).read("m1", CGROUP, 1.0) is None
    empty = cgroups.Hierarchies(v2=cgroups.Mount("/", str(tmp_path)))
    assert MachinePressures(empty).read("m1", CGROUP, 1.0) is None   # PSI off: no files
    assert MachinePressures(_tree(tmp_path)).read("m1", None, 1.0) is None
    assert MachinePressures(_tree(tmp_path)).read("m1", "/../etc", 1.0) is None


def test_a_broken_pressure_file_is_no_reading_said_once(tmp_path, caplog):
    hierarchies = _tree(tmp_path)
    (tmp_path / "cg" / CGROUP.lstrip("/") / "io.pressure").write_text("some avg10=x\n")
    found = MachinePressures(hierarchies)
    with caplog.at_level(logging.WARNING):
        assert found.read("m1", CGROUP, 1.0) is None
        assert found.read("m1", CGROUP, 2.0) is None
    assert len([r for r in caplog.records if "io.pressure" in r.getMessage()]) == 1


def test_the_record_reads_back_and_a_hostile_one_is_absent(tmp_path):
    reading = MachinePressures(_tree(tmp_path)).read("m1", CGROUP, 100.0)
    record = machinepressure.parse_record(machinepressure.record_text(reading, CGROUP))
    assert record["cgroup"] == CGROUP and record["time"] == 100.0
    assert record["memory"]["some"]["avg10"] == 20.0
    assert record["memory"]["some"]["stall_seconds"] is None
    assert machinepressure.summary(record) == "psi some avg10: cpu 1.0% mem 20.0% io 5.0%"
    good = json.loads(machinepressure.record_text(reading, CGROUP))
    for bad in ({**good, "version": 2}, {**good, "time": "now"}, {**good, "memory": None},
                {**good, "io": {"some": {**good["io"]["some"], "avg10": -1}}},
                {**good, "io": {"some": {**good["io"]["some"], "avg10": True}}},
                {**good, "io": {"some": {**good["io"]["some"], "total_seconds": "x"}}},
                {**good, "io": {"most": good["io"]["some"]}}):
        assert machinepressure.parse_record(json.dumps(bad)) is None
    assert machinepressure.parse_record('{"version": 1, "time": NaN}') is None
    assert machinepressure.parse_record("not json") is None
    assert machinepressure.parse_record(None) is None
    assert machinepressure.summary(None) == ""


class _Backend:
    def __init__(self, paths):
        self.paths = paths

    def cgroup_path(self, name, directory):
        return self.paths.get(name)


class _Pool:
    def __init__(self, backend):
        self.backend = backend

    def for_model(self, model):
        return self.backend


def _machine(paths, slot=SLOT, created=NOW - 100):
    d = MachineDir.create(paths, created, "alpha", slot)
    write_slot_record(paths, slot, SlotRecord(created, "alpha", "docker"))
    d.write("started", str(created + 10))
    return d


def _seen(*directories):
    return Observation(directories={d.name: d for d in directories},
                       models={d.name: "docker" for d in directories})


def test_the_cycle_records_a_reading_and_removes_the_record_without_one(tmp_path, paths):
    d = _machine(paths)
    recorder = MachinePressureRecorder(MachinePressures(_tree(tmp_path)))
    pool = _Pool(_Backend({SLOT: CGROUP}))
    recorder.record(pool, [SLOT], _seen(d), NOW)
    record = machinepressure.parse_record(d.read(RECORD))
    assert record["io"]["full"]["avg10"] == 2.5 and record["cgroup"] == CGROUP
    recorder.record(_Pool(_Backend({})), [SLOT], _seen(d), NOW + 60)   # names none: v1
    assert not d.exists(RECORD)


def test_one_machines_trouble_stays_its_own_and_gauges_of_ended_machines_go(tmp_path, paths):
    d1, d2 = _machine(paths), _machine(paths, "f1-01.example.com")
    _tree(tmp_path, cgroup="/vac/b")
    recorder = MachinePressureRecorder(MachinePressures(_tree(tmp_path)))

    class Broken(_Backend):
        def cgroup_path(self, name, directory):
            if name == SLOT:
                raise RuntimeError("engine gone")
            return "/vac/b"
    recorder.record(_Pool(Broken({})), [SLOT, d2.name], _seen(d1, d2), NOW)
    assert not d1.exists(RECORD) and d2.exists(RECORD)
    recorder.record(_Pool(Broken({})), [], _seen(d1, d2), NOW + 60)
    assert recorder.pressures._gauges == {}


def _recorded(tmp_path, d):
    reading = MachinePressures(_tree(tmp_path)).read("m1", CGROUP, NOW - 5)
    d.write(RECORD, machinepressure.record_text(reading, CGROUP))
    return d


def test_vac_slots_shows_a_running_machines_pressure_and_none_without(tmp_path, paths,
                                                                     monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    d = _machine(paths)
    row = slotview.rows_at(paths, [SLOT], NOW, None)[0]
    assert row["state"] == "Running" and row["pressure"] is None
    assert "psi" not in row["detail"]
    d.write(RECORD, "garbage")
    assert slotview.rows_at(paths, [SLOT], NOW, None)[0]["pressure"] is None
    os.unlink(d.file(RECORD))
    _recorded(tmp_path, d)
    row = slotview.rows_at(paths, [SLOT], NOW, None)[0]
    assert row["pressure"]["memory"]["some"]["avg10"] == 20.0
    assert "psi some avg10: cpu 1.0% mem 20.0% io 5.0%" in row["detail"]
    json.dumps(row)


def test_the_status_cell_carries_the_pressure_or_none(tmp_path, paths):
    d = _machine(paths)
    assert _cell(0, SLOT, d, "docker", NOW)["pressure"] is None
    _recorded(tmp_path, d)
    assert _cell(0, SLOT, d, "docker", NOW)["pressure"]["io"]["some"]["avg10"] == 5.0


def _samples(config):
    found = {}
    for family in machine_pressure_families(config):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _config(tmp_path, make_config):
    (tmp_path / "user_data").write_text("#!/bin/sh\n")
    return make_config(f"""
        [settings]
        vac_space = vac01.example.com
        factory_name = f1.example.com
        enable_fake_backend = true
        host_processors = 2
        [machinetype alpha]
        machine_model = fake
        user_data = {tmp_path / "user_data"}
        """)


def test_the_status_page_shows_a_cells_pressure_and_nothing_without(tmp_path, paths,
                                                                    make_config):
    conf = _config(tmp_path, make_config)
    d = _machine(paths)
    assert "psi cpu" not in statuspages.factory_page(factory_view(conf, now=NOW), 30)
    _recorded(tmp_path, d)
    view = factory_view(conf, now=NOW)
    assert view["slots"][0]["pressure"]["memory"]["some"]["avg10"] == 20.0
    assert "psi cpu 1% mem 20% io 5%" in statuspages.factory_page(view, 30)


def test_metrics_per_machine_and_no_samples_without_a_reading(tmp_path, paths, make_config):
    conf = _config(tmp_path, make_config)
    d = _machine(paths)
    assert _samples(conf) == {}
    _recorded(tmp_path, d)
    samples = _samples(conf)
    labels = (("line", "some"), ("machinetype", "alpha"), ("resource", "memory"),
              ("slot", SLOT))
    assert samples[("vac_machine_pressure_ratio", labels + (("window", "avg10"),))] == 0.2
    assert samples[("vac_machine_pressure_stall_seconds_total", labels)] == 3.0
    assert len([k for k in samples if k[0] == "vac_machine_pressure_ratio"]) == 18


def test_a_vms_machine_scope_from_qemus_pid_file(tmp_path):
    pids, proc = tmp_path / "run", tmp_path / "proc"
    (proc / "4242").mkdir(parents=True)
    pids.mkdir()
    (pids / "vm-00.pid").write_text("4242\n")
    (proc / "4242" / "cgroup").write_text(
        "0::/machine.slice/machine-qemu\\x2d3\\x2dvm\\x2d00.scope/libvirt/emulator\n")
    assert scope.cgroup_path("vm-00", str(pids), str(proc)) == \
        "/machine.slice/machine-qemu\\x2d3\\x2dvm\\x2d00.scope"
    (proc / "4242" / "cgroup").write_text(   # libvirt without systemd
        "4:memory:/machine/qemu-8-vm-00.libvirt-qemu\n"
        "0::/machine/qemu-8-vm-00.libvirt-qemu/emulator\n")
    assert scope.cgroup_path("vm-00", str(pids), str(proc)) == \
        "/machine/qemu-8-vm-00.libvirt-qemu"
    (proc / "4242" / "cgroup").write_text("0::/user.slice\n")
    assert scope.cgroup_path("vm-00", str(pids), str(proc)) is None
    (pids / "vm-00.pid").write_text("x")
    assert scope.cgroup_path("vm-00", str(pids), str(proc)) is None
    assert scope.cgroup_path("absent", str(pids), str(proc)) is None
    assert scope.cgroup_path("../x", str(pids), str(proc)) is None


def test_dockers_machine_cgroup_is_its_recorded_parent(paths):
    from vac.backends.docker.backend import DockerBackend
    d = _machine(paths)
    assert DockerBackend.cgroup_path(None, SLOT, d) is None     # no backend.json yet
    d.write_backend_record({"cgroup_parent": "/vac/docker-x"})
    assert DockerBackend.cgroup_path(None, SLOT, d) == "/vac/docker-x"
    d.write_backend_record({"cgroup_parent": "vac-docker-x.slice"})
    assert DockerBackend.cgroup_path(None, SLOT, d) == "/vac.slice/vac-docker.slice/" \
        "vac-docker-x.slice"
    d.write_backend_record({"cgroup_parent": "/elsewhere"})     # not one of ours
    assert DockerBackend.cgroup_path(None, SLOT, d) is None
