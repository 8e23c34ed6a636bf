# SPDX-License-Identifier: BSD-2-Clause
"""`vac apel-sync`: sync totals equal the archived job records, queued with dirq; exit codes."""
from __future__ import annotations

import calendar
import os
import time

import pytest
from accountingworld import fields
from dirq.QueueSimple import QueueSimple
from fakeclock import T0

from vac import cli
from vac.accounting import sync
from vac.accounting.validate import check_sync


def queued(paths):
    q = QueueSimple(paths.apel_outgoing)
    texts = []
    for name in q:
        assert q.lock(name)
        texts.append(q.get(name).decode())
        q.remove(name)
    return texts


def month_of(when):
    return time.strftime("%Y%m", time.gmtime(when))


def test_sync_record_counts_the_months_job_records(world, capsys):
    w = world()
    w.run()
    w.run(1500)
    w.run(1)
    w.run(1500)                          # four machines finished in all
    jobs = queued(w.paths)
    assert len(jobs) == 4
    month = month_of(T0 + 1500)
    assert cli.main(["--config", str(w.conf), "apel-sync", month]) == 0
    [text] = queued(w.paths)
    [record] = check_sync(text)
    assert record == {"Site": "UKI-EXAMPLE", "SubmitHost": "vac01.example.com/vac-f1.example.com",
                      "NumberOfJobs": str(len(jobs)), "Month": str(int(month[4:])),
                      "Year": month[:4]}
    assert {fields(j)["SubmitHost"] for j in jobs} == {record["SubmitHost"]}
    assert "4 jobs" in capsys.readouterr().out


def test_records_of_another_submit_host_are_skipped_and_months_are_separate(world):
    w = world()
    w.run()
    w.run(1500)
    day_dirs = os.listdir(w.paths.apel_archive)
    old = os.path.join(w.paths.apel_archive, day_dirs[0], "00000000000001")
    with open(old, "w") as f:
        f.write("APEL-individual-job-message: v0.3\nSite: UKI-EXAMPLE\nSubmitHost: other\n%%\n")
    os.utime(old, (T0 - 100, T0 - 100))                 # older than ours: ours set the hosts
    count = sync.count_month(w.paths, *sync.parse_month(month_of(T0 + 1500)))
    assert count.jobs == 2 and len(count.skipped) == 1 and "differ" in count.skipped[0]
    assert sync.count_month(w.paths, 1999, 1).jobs == 0


def test_default_month_is_that_of_24_hours_ago():
    first = calendar.timegm((2026, 12, 1, 12, 0, 0))
    assert sync.default_month(first) == (2026, 11)
    assert sync.default_month(first + 86400) == (2026, 12)


@pytest.mark.parametrize("month", ["2026", "202613", "20261x", "abcdef"])
def test_a_bad_month_is_an_argument_error_exit_2(world, month, capsys):
    w = world()
    with pytest.raises(SystemExit) as caught:
        cli.main(["--config", str(w.conf), "apel-sync", month])
    assert caught.value.code == 2
    assert f"{month!r} is not a month YYYYMM" in capsys.readouterr().err


def test_a_queue_that_cannot_be_written_exits_1(world):
    w = world()
    w.run()
    w.run(1500)
    queued(w.paths)
    os.rename(w.paths.apel_outgoing, w.paths.apel_outgoing + ".moved")
    with open(w.paths.apel_outgoing, "w") as f:
        f.write("not a directory")
    assert cli.main(["--config", str(w.conf), "apel-sync", month_of(T0 + 1500)]) == 1


def test_without_sitename_the_record_is_printed_not_queued(world, capsys):
    w = world(settings="")
    w.run()
    w.run(1500)
    assert cli.main(["--config", str(w.conf), "apel-sync", month_of(T0 + 1500)]) == 0
    out = capsys.readouterr().out
    assert "NumberOfJobs: 2\n" in out and "not queued" in out
    assert QueueSimple(w.paths.apel_outgoing).count() == 0
