# SPDX-License-Identifier: BSD-2-Clause
"""vac doctor's pressure line (vac.ops.pressurecheck): a host without PSI named when a
threshold needs it, the figures against the thresholds, a pause in progress, a broken file."""
from __future__ import annotations

import dataclasses

import pytest

from vac.ops.checks import OK, WARN
from vac.ops.pressurecheck import host_pressure

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
{settings}
"""


def _proc(tmp_path, memory=0.0, io_full=0.0):
    (tmp_path / "pressure").mkdir()
    for name, some, full in (("cpu", 80.0, 0.0), ("memory", memory, memory / 2),
                             ("io", io_full * 2, io_full)):
        (tmp_path / "pressure" / name).write_text(
            f"some avg10={some:.2f} avg60=0.00 avg300=0.00 total=10\n"
            f"full avg10={full:.2f} avg60=0.00 avg300=0.00 total=5\n")
    return str(tmp_path)


@pytest.fixture
def settings(make_config):
    return lambda text="": make_config(CONF.format(settings=text)).settings


def test_a_host_without_psi_is_named(tmp_path, settings):
    [line] = host_pressure(settings(), str(tmp_path))
    assert line.status == WARN
    assert "keeps no pressure stall information" in line.detail
    assert "load average alone" in line.detail and "psi=0" in line.fix


def test_without_psi_and_without_thresholds_all_is_well(tmp_path, settings):
    s = settings("pressure_memory_some =\npressure_io_full =")
    [line] = host_pressure(s, str(tmp_path))
    assert line.status == OK and "no pressure threshold is set" in line.detail


def test_the_figures_against_the_thresholds(tmp_path, settings):
    [line] = host_pressure(settings(), _proc(tmp_path, memory=3.5, io_full=1.0))
    assert line == dataclasses.replace(line, status=OK)
    assert line.detail == ("memory some avg10 3.50% (threshold 20%), "
                           "io full avg10 1.00% (threshold 40%)")


def test_a_resource_above_its_threshold_now(tmp_path, settings):
    [line] = host_pressure(settings("pressure_cpu_some = 50"), _proc(tmp_path, io_full=45.0))
    assert line.status == WARN
    assert line.detail == ("creation pauses now: cpu some avg10 80.00% > pressure_cpu_some 50%; "
                           "io full avg10 45.00% > pressure_io_full 40%")


def test_a_file_not_in_the_kernels_format(tmp_path, settings):
    root = _proc(tmp_path)
    (tmp_path / "pressure" / "io").write_text("garbage\n")
    [line] = host_pressure(settings(), root)
    assert line.status == WARN and "pressure/io line 1" in line.detail
