# SPDX-License-Identifier: BSD-2-Clause
"""A Docker machine's own pressure (PSI) on the real engine: the factory's cycles read the
cpu/memory/io.pressure of the machine's own cgroup (its per-machine parent: a slice under
systemd's cgroup driver, /vac/docker-<dir> under cgroupfs) and record it in the machine's
directory; `vac slots` and the metrics show it. The payload runs more busy loops than the
host has processors, so the kernel's cpu stall of that cgroup grows, cycle after cycle.

It needs the machine's cgroup in a cgroup2 mount: the v2 guest (scripts/ci/v2-guest-run.sh,
systemd driver, where it must run) or a hybrid host whose engine puts containers in the
unified hierarchy too (runc does, under the cgroupfs driver); on a host with cgroup v1 alone
it skips (the unit tests show such a machine's pressure as absent).
"""
from __future__ import annotations

import os
import time

import pytest
from docker_engine import engine_ready
from dockerfactory import DockerFactory
from waiting import GENEROUS, wait_until

from vac import slotview
from vac.backends.docker.backend import DockerBackend
from vac.host import machinepressure, pressure

try:   # prometheus_client is a weak dependency (the v2 guest has none)
    from vac.web.pressuremetrics import machine_pressure_families
except ImportError:
    machine_pressure_families = None

pytestmark = [pytest.mark.root]

LOOPS = (os.cpu_count() or 1) + 2
PAYLOAD = ("#!/bin/sh\n"
           f"for i in $(seq {LOOPS}); do (while :; do :; done) & done\n"
           "sleep 600\n")


@pytest.fixture
def dock(tmp_path, make_config):
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    yield world
    world.remove_all()


def _record(dock, name):
    return machinepressure.parse_record(
        dock.dir(name).read(machinepressure.RECORD, machinepressure.RECORD_LIMIT))


def test_a_docker_machines_own_cgroup_pressure_is_recorded_and_shown(dock):
    dock.write(PAYLOAD, slots=1, mb=64)
    report = dock.cycle()
    name = dock.slot(0)
    assert report.created == [name] and report.errors == []
    path = DockerBackend(dock.load().settings).cgroup_path(name, dock.dir(name))
    assert path is not None, dock.dir(name).read_backend_record()
    where = pressure.cgroup_dir(path)
    if where is None or not os.path.isdir(where):
        if os.environ.get("VAC_V2_GUEST") == "1":
            pytest.fail(f"in the v2 guest the machine's cgroup {path} is not in cgroup2")
        pytest.skip(f"the machine's cgroup {path} is not in a cgroup2 mount on this host")
    seen = []

    def stalled() -> bool:
        dock.cycle()
        record = _record(dock, name)
        seen.append(record)
        return record is not None and record["cpu"]["some"]["total_seconds"] > 0 and \
            record["cpu"]["some"]["stall_seconds"] is not None
    assert wait_until(stalled, timeout=GENEROUS, step=1.0), seen[-3:]
    record = seen[-1]
    assert record["cgroup"] == path
    assert set(record) >= {"cpu", "memory", "io"}
    assert record["memory"]["some"]["avg10"] >= 0.0
    row = slotview.rows_at(dock.load().settings.paths, [name], time.time(), None)[0]
    assert row["state"] == "Running"
    assert row["pressure"]["cpu"]["some"]["total_seconds"] >= \
        record["cpu"]["some"]["total_seconds"]
    assert "psi some avg10: cpu " in row["detail"]
    if machine_pressure_families is None:
        return
    samples = {(s.name, s.labels["resource"], s.labels["line"], s.labels.get("window")): s
               for family in machine_pressure_families(dock.load())
               for s in family.samples if s.labels["slot"] == name}
    assert samples[("vac_machine_pressure_stall_seconds_total", "cpu", "some", None)].value > 0
    assert ("vac_machine_pressure_ratio", "io", "some", "avg10") in samples
