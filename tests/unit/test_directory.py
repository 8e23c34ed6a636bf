# SPDX-License-Identifier: BSD-2-Clause
"""Machine directories: layout, atomic writes, states, hostile joboutputs."""
from __future__ import annotations

import os

import pytest

from vac import fsutil
from vac.errors import StateError
from vac.machine.directory import (
    MachineDir,
    MachineState,
    SlotRecord,
    read_slot_record,
    write_slot_record,
)


@pytest.fixture
def machine(paths):
    write_slot_record(paths, "f1-03.example.com", SlotRecord(1700000000, "alpha", "docker"))
    return MachineDir.create(paths, 1700000000, "alpha", "f1-03.example.com")


def test_layout_and_name_parts(paths, machine):
    assert machine.path == os.path.join(paths.machines, "1700000000_alpha_f1-03.example.com")
    assert (machine.created, machine.machinetype, machine.name) == (
        1700000000, "alpha", "f1-03.example.com")
    for sub in ("machinefeatures", "jobfeatures", "joboutputs"):
        assert os.path.isdir(os.path.join(machine.path, sub))
    with open(paths.slot_record("f1-03.example.com")) as f:
        assert f.read() == "1700000000 alpha docker"
    assert MachineDir.for_slot(paths, "f1-03.example.com").path == machine.path


def test_states_from_files(machine):
    assert machine.disk_state() == MachineState.STARTING
    machine.write("started", "1700000005", mtime=1700000005)
    assert machine.disk_state() == MachineState.RUNNING
    assert machine.started == 1700000005
    fsutil.touch(machine.file("finished"), 1700000100)
    assert machine.disk_state() == MachineState.SHUTDOWN
    assert machine.finished == 1700000100


def test_state_values_are_the_wire_strings():
    assert [s.value for s in MachineState] == ["Unknown", "Shut down", "Starting", "Running",
                                              "Paused", "Zombie", "Failed"]


def test_a_machine_finished_without_starting_failed(machine):
    """A failed creation is finished at once and never started: Failed, not Starting."""
    assert machine.disk_state() == MachineState.STARTING
    fsutil.touch(machine.file("finished"), 1700000100)
    assert machine.disk_state() == MachineState.FAILED


def test_typed_values(machine):
    machine.write("jobfeatures/allocated_cpu", "4\n")
    machine.write("jobfeatures/shutdowntime_job", "1700086400")
    machine.write("machinefeatures/hs06", "40.0")
    machine.write("heartbeat", "123.4 56.7\n", mtime=1700000200)
    assert machine.processors == 4 and machine.shutdown_time == 1700086400
    assert machine.hs06 == 40.0 and machine.cpu_seconds == 123.4
    assert machine.heartbeat_time == 1700000200


def test_shutdown_message_first_line_stripped(machine):
    machine.write("joboutputs/shutdown_message", "  300 No work\nmore\n")
    assert machine.shutdown_message == "300 No work"


def test_vac_never_overwrites_the_machines_message(machine):
    machine.write("joboutputs/shutdown_message", "200 Success")
    assert not machine.write_shutdown_message_if_none("700 Heartbeat file not updated")
    assert machine.shutdown_message == "200 Success"


def test_symlinked_joboutput_is_not_followed(machine, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("root password")
    os.symlink(secret, machine.file("joboutputs/shutdown_message"))
    assert machine.shutdown_message is None
    with pytest.raises(StateError):
        fsutil.read_text_nofollow(machine.file("joboutputs/shutdown_message"))


def test_oversized_joboutput_is_refused(machine):
    machine.write("joboutputs/shutdown_message", "3" * 100_000)
    assert machine.shutdown_message is None


def test_fifo_joboutput_does_not_block(machine):
    os.mkfifo(machine.file("joboutputs/shutdown_message"))
    assert machine.shutdown_message is None


def test_atomic_write_leaves_no_temp_files(paths, machine):
    machine.write("user_data", "x" * 1000, mode=0o700)
    assert oct(os.stat(machine.file("user_data")).st_mode & 0o777) == "0o700"
    assert [n for n in os.listdir(machine.path) if n.startswith(".tmp")] == []


def test_bad_slot_records_are_ignored(paths):
    with open(paths.slot_record("f1-00.example.com"), "w") as f:
        f.write("garbage")
    assert read_slot_record(paths, "f1-00.example.com") is None
    assert MachineDir.for_slot(paths, "f1-00.example.com") is None


def test_backend_record_round_trip(machine):
    machine.write_backend_record({"container_id": "abc"})
    assert machine.read_backend_record() == {"container_id": "abc", "version": 1}
    machine.write("backend.json", "[not an object]")
    assert machine.read_backend_record() == {}
