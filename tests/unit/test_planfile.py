# SPDX-License-Identifier: BSD-2-Clause
"""vac.planfile: plan.json's one writer and one reader (versioned, idle reasons as data)."""
from __future__ import annotations

import json

from vac import planfile
from vac.planfile import IdleReason, PlanRecord

BACKOFF = IdleReason(planfile.BACKOFF, "backoff of a until 1700000600", machinetype="a",
                     until=1_700_000_600.0, factory="f3.example.com")


def test_a_record_reads_back_as_it_was_written(tmp_path):
    path = str(tmp_path / "plan.json")
    both = planfile.combined([BACKOFF, IdleReason(planfile.BACKEND_WAITING, "b waits",
                                                  machinetype="b")])
    record = PlanRecord(time=1_700_000_000, idle={"s0": BACKOFF, "s1": both},
                        config_state=planfile.CONFIG_REJECTED_STATE, config_error="bad",
                        errors=("s2: destroy failed: x",),
                        machine_errors={"s2": {"machine": "m", "count": 2, "last": "x"}},
                        unmanaged={"s3": "backend docker unavailable"},
                        counts=(1, 4, 1, 4, 1.0), notes=("a: 0 before fizzle",))
    planfile.write(path, record)
    assert planfile.read(path) == record
    assert [p.machinetype for p in planfile.read(path).idle["s1"].each()] == ["a", "b"]
    assert json.load(open(path))["version"] == planfile.VERSION


def test_unmanaged_as_a_tuple_of_names_or_an_old_list_reads_as_a_mapping(tmp_path):
    path = str(tmp_path / "plan.json")
    planfile.write(path, PlanRecord(time=1.0, unmanaged=("s0",)))
    assert planfile.read(path).unmanaged == {"s0": ""}
    with open(path, "w") as f:
        json.dump({"time": 1, "unmanaged": ["s1", 7]}, f)
    assert planfile.read(path).unmanaged == {"s1": ""}


def test_a_version_1_file_reads_with_reasons_of_kind_other(tmp_path):
    path = str(tmp_path / "plan.json")
    with open(path, "w") as f:
        json.dump({"time": 5, "idle": {"s0": "draining"}, "config_error": "bad"}, f)
    record = planfile.read(path)
    assert record.version == 1 and record.idle["s0"] == IdleReason(planfile.OTHER, "draining")
    assert record.config_state == planfile.CONFIG_REJECTED_STATE


def test_absent_malformed_or_hostile_files_read_as_none_or_are_cut(tmp_path):
    path = tmp_path / "plan.json"
    assert planfile.read(str(path)) is None
    for text in ("{", "[]", '{"time": "soon"}', '{"idle": {}}'):
        path.write_text(text)
        assert planfile.read(str(path)) is None, text
    path.write_text(json.dumps({"time": 1, "idle": {"s0": {"kind": "nonsense", "text": "x" * 5000,
                                                           "until": "later"}},
                                "counts": [1, 2, 3], "machine_errors": {"s": {"count": "1"}}}))
    record = planfile.read(str(path))
    reason = record.idle["s0"]
    assert reason.kind == planfile.OTHER and len(reason.text) == 2000 and reason.until is None
    assert record.counts is None and record.machine_errors == {}
