# SPDX-License-Identifier: BSD-2-Clause
"""APEL job records through the cycle on the fake backend: fields, validation, archive, the dirq
outgoing queue read back with QueueSimple, rejects, and each step's exactly-once checks."""
from __future__ import annotations

import os

import pytest
from accountingworld import fields
from dirq.QueueSimple import QueueSimple
from fakeclock import T0

from vac.accounting import apel, store
from vac.accounting.validate import RecordError, check_job, check_sync
from vac.machine.directory import MachineDir



def test_finished_machines_get_one_archived_and_queued_record_each_with_every_field(world):
    w = world()
    assert sorted(w.run().created) == ["f1-00.example.com", "f1-01.example.com"]
    report = w.run(1500)                       # the fake machines ran 1000 s
    assert sorted(report.finished) == ["f1-00.example.com", "f1-01.example.com"]
    assert sorted(report.accounting.archived) == sorted(report.finished)
    assert sorted(report.accounting.queued) == sorted(report.finished)
    archived = w.archived()
    assert len(archived) == 2
    for day, name, text in archived:
        assert text.startswith("APEL-individual-job-message: v0.3\n") and text.endswith("\n%%\n")
        f = fields(text)
        uuid = f["LocalJobId"]
        d = [MachineDir(os.path.join(w.paths.machines, n)) for n in os.listdir(w.paths.machines)
             if (MachineDir(os.path.join(w.paths.machines, n)).job_id == uuid)][0]
        assert list(f) == ["Site", "SubmitHost", "LocalJobId", "LocalUserId", "Queue",
                           "GlobalUserName", "FQAN", "WallDuration", "CpuDuration",
                           "Processors", "NodeCount", "InfrastructureDescription",
                           "InfrastructureType", "StartTime", "EndTime", "MemoryReal",
                           "MemoryVirtual", "ServiceLevelType", "ServiceLevel"]
        assert f["Site"] == "UKI-EXAMPLE"
        assert f["SubmitHost"] == "vac01.example.com/vac-f1.example.com"
        assert f["LocalUserId"] == "f1.example.com" and f["Queue"] == "alpha"
        assert f["GlobalUserName"] == "/DC=com/DC=example/DC=vac01"
        assert f["FQAN"] == "/lhcb/Role=pilot"
        assert int(f["StartTime"]) == int(d.started) == int(T0)
        assert int(f["EndTime"]) == int(d.heartbeat_time)
        assert int(f["WallDuration"]) == int(f["EndTime"]) - int(f["StartTime"]) >= 1000
        assert int(f["CpuDuration"]) == int(d.cpu_seconds) > 0
        assert f["Processors"] == "1" and f["NodeCount"] == "1"
        assert f["InfrastructureDescription"] == "APEL-VAC" and f["InfrastructureType"] == "grid"
        assert f["MemoryReal"] == f["MemoryVirtual"] == str(2048 * 1024)
        assert f["ServiceLevelType"] == "HEPSPEC" and float(f["ServiceLevel"]) == 10.0
        assert day == apel.utc_day(int(f["EndTime"])) and len(name) == 14 and name.isdigit()
        assert os.stat(os.path.join(w.paths.apel_archive, day, name)).st_mode & 0o777 == 0o644
    assert sorted(w.queued()) == sorted(t for _, _, t in archived)
    assert os.listdir(store.pending_dir(w.paths)) == []
    assert w.run(1).accounting.archived == []   # nothing twice
    assert len(w.archived()) == 2


def test_without_sitename_records_are_archived_not_queued_and_placeholder_site(world):
    w = world(settings="")
    w.run()
    report = w.run(1500)
    assert len(report.accounting.archived) == 2 and report.accounting.queued == []
    assert QueueSimple(w.paths.apel_outgoing).count() == 0
    for _, _, text in w.archived():
        f = fields(text)
        assert f["Site"] == "example.com" and f["ServiceLevel"] == "1.000"


def test_short_runs_are_not_accounted(world):
    w = world()
    w.write("gocdb_sitename = UKI-EXAMPLE\n")
    w.run()
    w.write("gocdb_sitename = UKI-EXAMPLE\n")
    text = w.conf.read_text().replace("fake_run_seconds = 1000", "fake_run_seconds = 50")
    w.conf.write_text(text)
    w.factory.run_cycle()
    report = w.run(3000)  # machines already created with 1000 s; fizzle 100 -> accounted
    assert len(report.accounting.archived) == 2
    w.conf.write_text(text.replace("fizzle_seconds = 100", "fizzle_seconds = 4000"))
    w.run(1)
    report = w.run(1500)
    assert report.accounting.archived == []
    assert all("less than fizzle_seconds" in r for r in report.accounting.skipped.values())


def test_a_record_the_loader_would_reject_goes_to_apel_rejected_with_the_reason(world):
    w = world()
    w.run()
    for name in os.listdir(w.paths.machines):   # a pipe-given FQAN with a newline in it
        MachineDir(os.path.join(w.paths.machines, name)).write(
            "accounting_fqan", "/lhcb\nVO: atlas")
    report = w.run(1500)
    assert len(report.accounting.rejected) == 2 and report.accounting.archived == []
    assert w.archived() == [] and QueueSimple(w.paths.apel_outgoing).count() == 0
    rejected = store.rejected_dir(w.paths)
    reasons = [n for n in os.listdir(rejected) if n.endswith(".reason")]
    assert len(reasons) == 2
    with open(os.path.join(rejected, reasons[0])) as f:
        assert "FQAN contains a control character" in f.read()


class Killed(BaseException):
    """Stands for the SIGKILL: nothing after the crash point runs."""


@pytest.mark.parametrize("point", ["after-finished", "before-archive", "after-archive",
                                   "before-queue"])
def test_a_kill_at_any_step_gives_exactly_one_record_after_restart(world, monkeypatch, point):
    w = world()
    w.run()

    def crash(name):
        if name == point:
            raise Killed(name)

    monkeypatch.setattr(store, "crash_point", crash)
    with pytest.raises(Killed):
        w.run(1500)
    monkeypatch.undo()
    restarted = world()                 # a new vacd on the same state directory
    restarted.clock.now = w.clock.now
    restarted.run(1)
    texts = [t for _, _, t in w.archived()]
    assert len(texts) == 2 and len({fields(t)["LocalJobId"] for t in texts}) == 2
    assert sorted(w.queued()) == sorted(texts)
    assert os.listdir(store.pending_dir(w.paths)) == []


def test_a_kill_inside_dirq_between_link_and_unlink_queues_once(world, monkeypatch):
    w = world()
    w.run()
    real_unlink = os.unlink

    def unlink(path, *a, **kw):
        if path.endswith(".record"):
            raise Killed(path)
        return real_unlink(path, *a, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(Killed):
        w.run(1500)
    monkeypatch.undo()
    assert QueueSimple(w.paths.apel_outgoing).count() == 1   # linked, the staged copy stays
    restarted = world()
    restarted.clock.now = w.clock.now
    restarted.run(1)
    assert len(w.queued()) == 2 == len(w.archived())
    assert sorted(w.queued()) == sorted(t for _, _, t in w.archived())


def test_an_archive_name_taken_by_another_record_moves_to_the_next(paths):
    text_a = "APEL-individual-job-message: v0.3\nLocalJobId: a\n%%\n"
    first = store.archive(paths, "a", 1_700_000_000, text_a)
    path_b, present = store.archived_path(paths, "b", 1_700_000_000)
    assert not present and path_b != first
    os.makedirs(os.path.dirname(path_b), exist_ok=True)
    # b's first candidate taken by a foreign record: b goes to a later name, found there again
    with open(path_b, "w") as f:
        f.write("APEL-individual-job-message: v0.3\nLocalJobId: other\n%%\n")
    second = store.archive(paths, "b", 1_700_000_000, text_a.replace(": a", ": b"))
    assert second != path_b and store.archived_path(paths, "b", 1_700_000_000) == (second, True)


GOOD = """APEL-individual-job-message: v0.3
Site: UKI-EXAMPLE
LocalJobId: 0b0f
WallDuration: 100
CpuDuration: 50
StartTime: 1700000000
EndTime: 1700000100
ServiceLevelType: HEPSPEC
ServiceLevel: 10.0
%%
"""


@pytest.mark.parametrize("change, reason", [
    (("CpuDuration: 50\n", ""), "mandatory field CpuDuration missing"),
    (("Site: UKI-EXAMPLE", "Site: none"), "mandatory field Site missing"),
    (("ServiceLevel: 10.0\n", ""), "mandatory field ServiceLevel missing"),
    (("Site: UKI-EXAMPLE", "Site: UKI-EXAMPLE\nColour: blue"), "Unknown field: Colour"),
    (("HEPSPEC", "DB12"), "ServiceLevelType 'DB12'"),
    (("EndTime: 1700000100", "EndTime: 1699999999"), "before StartTime"),
    (("EndTime: 1700000100", "EndTime: 1900000000"), "2 days in the future"),
    (("WallDuration: 100", "WallDuration: 1e2"), "not a non-negative integer"),
    (("ServiceLevel: 10.0", "ServiceLevel: ten"), "not a number"),
    (("v0.3", "v0.2"), "is not 'APEL-individual-job-message: v0.3'"),
    (("\n%%\n", "\n"), "not closed by %%"),
    (("Site: UKI-EXAMPLE", "Site: " + "x" * 256), "longer than 255"),
    (("Site: UKI-EXAMPLE", "Site: UKI-EXAMPLE\nSite: X"), "given twice"),
    (("%%\n", "%%\nSite: X\nLocalJobId: y\n%%\n"), "2 records"),
])
def test_the_loader_rules_reject_what_apel_rejects(change, reason):
    assert check_job(GOOD, now=1_700_000_200)["LocalJobId"] == "0b0f"
    with pytest.raises(RecordError, match=reason.replace("(", r"\(")):
        check_job(GOOD.replace(*change), now=1_700_000_200)


def test_sync_records_follow_the_loader_rules():
    text = apel.sync_record("UKI-EXAMPLE", "s/vac-f", 12, 2026, 11)
    assert check_sync(text) == [{"Site": "UKI-EXAMPLE", "SubmitHost": "s/vac-f",
                                 "NumberOfJobs": "12", "Month": "11", "Year": "2026"}]
    with pytest.raises(RecordError, match="Month 13"):
        check_sync(text.replace("Month: 11", "Month: 13"))
    with pytest.raises(RecordError, match="NumberOfJobs"):
        check_sync(text.replace("NumberOfJobs: 12", "NumberOfJobs: -1"))


def test_the_space_becomes_a_dc_dn_reversed():
    assert apel.global_user_name("vac01.example.com") == "/DC=com/DC=example/DC=vac01"
