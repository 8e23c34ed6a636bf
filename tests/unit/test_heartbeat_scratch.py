# SPDX-License-Identifier: BSD-2-Clause
"""Each running machine's scratch bytes in use, in its heartbeat file (its third field, from
the cycle's disk reading), and read from there by `vac slots` and the metrics; the original's
reader still gets the CPU seconds and percentage it got before."""
from __future__ import annotations

import os

import pytest

from vac import slotview
from vac.cycle.hostdisk import HostDisk
from vac.host.diskspace import DiskReading, Scratch
from vac.machine import heartbeat, scratch
from vac.machine.directory import MachineDir, MachineState

NOW = 1_700_000_000.0


def original(text):
    """(cpu seconds, cpu %) as Vac 03 reads its heartbeat file's first line."""
    line = text.splitlines(True)[0] if text else ""
    try:
        cpu = int(line.split(" ")[0])
    except ValueError:
        return 0, 0
    try:
        percent = float(line.split(" ")[1])
    except (IndexError, ValueError):
        percent = 0
    return cpu, percent


@pytest.fixture
def directory(tmp_path):
    path = tmp_path / "1700000000_a_f1-00.example.com"
    os.makedirs(path)
    return MachineDir(str(path))


def test_the_scratch_bytes_follow_the_cpu_fields(directory):
    directory.write_first_heartbeat(NOW)
    directory.write_heartbeat(50.7, NOW + 100, scratch=1_500_000_000)
    assert directory.read(heartbeat.NAME) == "50 50.0 1500000000\n"
    assert directory.heartbeat_values() == (50.0, 50.0)
    assert directory.scratch_bytes == 1_500_000_000
    assert original(directory.read(heartbeat.NAME)) == (50, 50.0)
    directory.write_heartbeat(60.0, NOW + 200)          # no scratch: the two fields alone
    assert directory.read(heartbeat.NAME) == "60 10.0\n" and directory.scratch_bytes is None


def test_without_a_percentage_its_place_is_kept(directory):
    directory.write_heartbeat(5.5, NOW, scratch=0)
    assert directory.read(heartbeat.NAME) == "5 - 0\n"
    assert directory.heartbeat_values() == (5.0, None) and directory.scratch_bytes == 0
    assert original(directory.read(heartbeat.NAME)) == (5, 0)


@pytest.mark.parametrize("text", ["12 3.5", "12 3.5 -4", "12 3.5 1e9", "12 3.5 x",
                                  "12 3.5 " + "9" * 30, "", "12\n3 4 5"])
def test_a_hostile_third_field_is_no_scratch(text):
    assert heartbeat.scratch_bytes(text) is None


def test_the_cycle_writes_each_machines_scratch_and_vac_slots_reads_it(world):
    w = world()
    w.run()
    config = w.load()
    machines = config.settings.paths.machines
    used = {}

    def reading(config, pool, roots):
        return DiskReading(scratches={name: Scratch(used.get(name, 7_000_000), 10 ** 9)
                                      for name in os.listdir(machines)})
    w.factory.disk = HostDisk(reading)
    w.run(10)     # read when the cycle plans, written with its heartbeats
    running = [MachineDir(os.path.join(machines, n)) for n in sorted(os.listdir(machines))]
    running = [d for d in running if d.read(heartbeat.NAME) and not d.finished]
    assert running and all(d.scratch_bytes == 7_000_000 for d in running)
    first = running[0]
    os.makedirs(first.file("jobfeatures"), exist_ok=True)
    first.write(scratch.MJF_KEY, str(4 * 10 ** 9))
    rows = {r["machine"]: r for r in slotview.slot_rows(config, w.clock.now)}
    row = rows[os.path.basename(first.path)]
    assert row["state"] == MachineState.RUNNING.value
    assert (row["scratch_bytes"], row["scratch_limit_bytes"]) == (7_000_000, 4 * 10 ** 9)
    assert "scratch 0.0 of 4.0 GB" in row["detail"]


def test_the_metrics_take_the_scratch_from_the_heartbeat(make_config, paths):
    pytest.importorskip("prometheus_client")
    from vac.machine.directory import SlotRecord, write_slot_record
    from vac.web.scratchmetrics import scratch_families

    config = make_config("""
        [settings]
        vac_space = vac01.example.com
        factory_name = f1.example.com
        enable_fake_backend = true
        host_processors = 2
        [machinetype dock]
        machine_model = fake
        target_share = 1
        """)
    s = config.settings
    name = "f1-00.example.com"
    write_slot_record(s.paths, name, SlotRecord(1000, "dock", "docker"))
    d = MachineDir.create(s.paths, 1000, "dock", name)
    os.makedirs(d.file("jobfeatures"), exist_ok=True)
    d.write(scratch.MJF_KEY, str(2 * 10 ** 9))
    used, limit, _ = scratch_families(config)
    assert used.samples == [] and limit.samples == []       # no scratch in its heartbeat
    d.write_heartbeat(3.0, NOW, scratch=12345)
    used, limit, _ = scratch_families(config)
    assert [(x.labels, x.value) for x in used.samples] == \
        [({"slot": name, "machinetype": "dock"}, 12345.0)]
    assert [x.value for x in limit.samples] == [2e9]
