# SPDX-License-Identifier: BSD-2-Clause
"""The rows of `vac slots` from a state directory: never-used slots, failed creations
(MachineState.FAILED / idle reason CREATION_FAILED and the slot's error count), local
times, the slots a state directory knows without a configuration."""
from __future__ import annotations

import time

import pytest

from vac import planfile, slotview
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.planfile import IdleReason, PlanRecord

NOW = 1796544000          # 2026-12-06 08:00:00 UTC
SLOT = "f1-00.example.com"


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _machine(paths, created, machinetype="alpha", slot=SLOT):
    d = MachineDir.create(paths, created, machinetype, slot)
    write_slot_record(paths, slot, SlotRecord(created, machinetype, "fake"))
    return d


def _row(paths, record=None):
    return slotview.rows_at(paths, [SLOT], NOW, record)[0]


def test_a_never_used_slot_reads_idle_and_never_used(paths):
    row = _row(paths)
    assert (row["state"], row["machinetype"], row["age"], row["processors"]) == \
        ("Idle", None, None, 0)
    assert row["detail"] == "never used; idle: no cycle has run yet"


def test_a_slot_whose_machine_directory_expired_is_idle_but_not_never_used(paths):
    write_slot_record(paths, SLOT, SlotRecord(NOW - 9 * 86400, "alpha", "fake"))
    row = _row(paths, PlanRecord(NOW, {SLOT: IdleReason(planfile.DRAINING, "draining")}))
    assert row["state"] == "Idle" and row["detail"] == "idle: draining"
    assert row["idle"]["kind"] == "draining"


def test_a_failed_creation_is_failed_with_its_reason_and_error_count(paths):
    d = _machine(paths, NOW - 40, "beta")           # created, never started
    why = "beta: creation failed: no space left on device"
    record = PlanRecord(NOW - 10, {SLOT: IdleReason(planfile.CREATION_FAILED, why,
                                                    machinetype="beta")},
                        machine_errors={SLOT: {"machine": d.path.rsplit("/", 1)[1],
                                               "count": 2, "last": why}})
    row = _row(paths, record)
    assert row["state"] == "Failed" and row["detail"] == f"Failed: {why}"
    assert row["errors"] == 2 and row["machinetype"] == "beta" and row["age"] == 40
    assert row["idle"]["kind"] == planfile.CREATION_FAILED


def test_a_failed_creation_without_a_directory_still_counts_its_errors(paths):
    why = "beta: creation failed: image not found"
    record = PlanRecord(NOW - 10, {SLOT: IdleReason(planfile.CREATION_FAILED, why,
                                                    machinetype="beta")},
                        machine_errors={SLOT: {"machine": "", "count": 1, "last": why}})
    row = _row(paths, record)
    assert (row["state"], row["machinetype"], row["errors"]) == ("Failed", "beta", 1)


def test_a_failed_disk_state_is_failed_without_a_plan_reason(paths, monkeypatch):
    d = _machine(paths, NOW - 40)
    monkeypatch.setattr(MachineDir, "disk_state",
                        lambda self: type("S", (), {"value": "Failed"})())
    record = PlanRecord(NOW - 10, machine_errors={SLOT: {
        "machine": d.path.rsplit("/", 1)[1], "count": 1, "last": "alpha: create: boom"}})
    row = _row(paths, record)
    assert row["state"] == "Failed" and row["detail"] == "Failed: alpha: create: boom"


def test_a_running_machine_is_not_made_failed_by_a_stale_reason(paths):
    d = _machine(paths, NOW - 100)
    d.write("started", str(NOW - 90))
    record = PlanRecord(NOW - 200, {SLOT: IdleReason(planfile.CREATION_FAILED, "old",
                                                     machinetype="alpha")})
    assert _row(paths, record)["state"] == "Running"


def test_backoff_ends_as_local_time_not_an_epoch():
    reason = IdleReason(planfile.BACKOFF, f"backoff of a until {NOW + 600}", machinetype="a",
                        until=NOW + 600, factory="f2.example.com")
    assert slotview.reason_text(reason, NOW) == \
        "backoff of a until 08:10:00 (abort on f2.example.com)"
    tomorrow = IdleReason(planfile.BACKOFF, "x", machinetype="b", until=NOW + 86400)
    assert slotview.reason_text(tomorrow, NOW) == "backoff of b until 2026-12-07 08:00:00"
    both = planfile.combined([reason, tomorrow])
    assert slotview.reason_text(both, NOW) == (
        "backoff of a until 08:10:00 (abort on f2.example.com); "
        "backoff of b until 2026-12-07 08:00:00")
    assert slotview.local_time(1e300, NOW) == "?"


def test_the_slots_of_a_state_directory_in_ordinal_order(paths):
    for n in (100, 2, 99):
        write_slot_record(paths, f"f1-{n:02d}.example.com", SlotRecord(NOW, "a", "fake"))
    open(f"{paths.slots}/.hidden", "w").close()
    open(f"{paths.slots}/bad\x1bname", "w").close()
    record = PlanRecord(NOW, {"f1-03.example.com": IdleReason(planfile.DRAINING, "draining")})
    assert slotview.names_on_disk(paths, record) == [
        "f1-02.example.com", "f1-03.example.com", "f1-99.example.com", "f1-100.example.com"]


def test_ages_for_people():
    assert [slotview.age_text(s) for s in (-5, 65, 3600 * 3 + 420, 86400 * 2 + 3600 * 5)] == \
        ["0m00s", "1m05s", "3h07m", "2d05h"]


def test_a_failed_machine_on_disk_shows_its_message_and_why_the_slot_waits_now(paths):
    d = _machine(paths, NOW - 400)
    d.write("joboutputs/shutdown_message", "700 Vac: creation failed: no such image",
            mtime=NOW - 399)
    d.write("finished", "", mtime=NOW - 399)        # finished without ever starting
    backoff = IdleReason(planfile.BACKOFF, "x", machinetype="alpha", until=NOW + 60)
    row = _row(paths, PlanRecord(NOW - 10, {SLOT: backoff}))
    assert row["state"] == "Failed" and row["last"] == "700 Vac: creation failed: no such image"
    assert row["detail"] == ("Failed: 700 Vac: creation failed: no such image; "
                             "idle: backoff of alpha until 08:01:00")


def test_a_reason_with_its_own_clock_keeps_its_text(paths):
    d = _machine(paths, NOW - 400)
    d.write("started", str(NOW - 390))
    d.write("joboutputs/shutdown_message", "300 Vac: yielded to the host's owner")
    d.write("finished", "", mtime=NOW - 100)
    text = (f"yielding to the host's owner: creation paused until {NOW + 60} (08:01:00) after "
            "f1-00 yielded")
    row = _row(paths, PlanRecord(NOW - 10, {SLOT: IdleReason(planfile.YIELDING, text,
                                                             until=NOW + 60)}))
    assert row["state"] == "Shut down"
    assert row["detail"] == f"last: 300 Vac: yielded to the host's owner; idle: {text}"
