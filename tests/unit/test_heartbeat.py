# SPDX-License-Identifier: BSD-2-Clause
"""vac.machine.heartbeat through MachineDir: the one writer and reader of a machine's
heartbeat file."""
from __future__ import annotations

import os

import pytest

from vac.machine import heartbeat
from vac.machine.directory import MachineDir

NOW = 1_700_000_000.0


@pytest.fixture
def directory(tmp_path):
    path = tmp_path / "1700000000_a_f1-00.example.com"
    os.makedirs(path)
    return MachineDir(str(path))


@pytest.mark.parametrize("text, values", [
    ("12 3.5\n", (12.0, 3.5)), ("0.0 0.0", (0.0, 0.0)), ("12", (12.0, None)),
    ("", (None, None)), (None, (None, None)), ("nan inf", (None, None)), ("x 7", (None, 7.0)),
])
def test_parse(text, values):
    assert heartbeat.parse(text) == values


def test_whole_cpu_seconds_and_the_percentage_since_the_last_heartbeat(directory):
    directory.write_first_heartbeat(NOW)
    assert directory.heartbeat_values() == (0.0, 0.0) and directory.heartbeat_time == NOW
    directory.write_heartbeat(50.7, NOW + 100)
    assert directory.read(heartbeat.NAME) == "50 50.0\n"      # int()-readable, as the original
    assert directory.cpu_seconds == 50.0 and directory.heartbeat_time == NOW + 100
    directory.write_heartbeat(10.0, NOW + 200)                 # CPU went back: no percentage
    assert directory.heartbeat_values() == (10.0, None)


def test_a_garbled_heartbeat_reads_as_no_cpu(directory):
    directory.write(heartbeat.NAME, "inf nan\n")
    assert directory.cpu_seconds == 0.0 and directory.heartbeat_values() == (None, None)
