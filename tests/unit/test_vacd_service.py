# SPDX-License-Identifier: BSD-2-Clause
"""vacd as a service, piece by piece: the STATUS= line from the cycle's record, the journal's
priorities and a warning logged once while it holds, and "not configured yet" told apart from a
rejected configuration (vac.config.presence)."""
from __future__ import annotations

import logging

import pytest

from vac import planfile
from vac.config import presence
from vac.errors import ConfigError, ConfigMissing, Problem
from vac.service import journal, statusline
from vac.service.journal import JournalFormatter, Repeats


def _record(**kw) -> planfile.PlanRecord:
    return planfile.PlanRecord(time=1e9, **kw)


def test_status_line_counts_running_and_idle_by_reason():
    backoff = planfile.IdleReason(planfile.BACKOFF, "backoff of lhcb", machinetype="lhcb")
    record = _record(counts=(14, 16, 14, 16, 140.0), idle={"a": backoff, "b": backoff})
    assert statusline.line(812, record) == "cycle 812: 14 running, 2 idle (backoff lhcb), config OK"


def test_status_line_says_starting_errors_and_the_rejection():
    record = _record(counts=(0, 3, 0, 3, 0.0), errors=("x",),
                     config_state=planfile.CONFIG_REJECTED_STATE,
                     config_error="/etc/vac.conf:[settings]: no vac_space",
                     idle={"c": planfile.IdleReason(planfile.CONFIG_REJECTED, "rejected")})
    assert statusline.line(3, record) == ("cycle 3: 0 running, 2 starting/stopping, 1 idle, "
                                      "1 error, configuration rejected: "
                                      "/etc/vac.conf:[settings]: no vac_space")


def test_status_line_without_a_record_says_the_configurations_problem():
    missing = ConfigMissing("/etc/vac.conf", "/etc/vac.conf does not exist: not configured yet")
    assert statusline.line(1, None, missing) == "cycle 1: /etc/vac.conf does not exist: " \
                                            "not configured yet"
    rejected = ConfigError([Problem("no vac_space", file="/etc/vac.conf")])
    assert statusline.line(2, None, rejected) == "cycle 2: configuration rejected: /etc/vac.conf: " \
                                             "no vac_space"
    assert "no record" in statusline.line(4, None)


def test_priorities_on_every_line_of_a_record():
    formatter = JournalFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("vacd", logging.ERROR, __file__, 1, "failed", (),
                                   exc_info=__import__("sys").exc_info())
    lines = formatter.format(record).splitlines()
    assert lines[0] == "<3>ERROR failed" and len(lines) > 2
    assert all(line.startswith("<3>") for line in lines)
    assert journal.priority(logging.WARNING) == 4 and journal.priority(logging.INFO) == 6
    assert journal.priority(logging.CRITICAL) == 2 and journal.priority(logging.DEBUG) == 7


def _rec(level, text):
    return logging.LogRecord("vacd", level, __file__, 1, text, (), None)


def test_a_warning_is_logged_when_it_appears_and_its_end_is_said_once():
    now = [0.0]
    repeats = Repeats(clock=lambda: now[0])
    assert repeats.filter(_rec(logging.WARNING, "w1"))
    assert not repeats.filter(_rec(logging.WARNING, "w1"))          # same cycle
    assert repeats.filter(_rec(logging.INFO, "cycle 1"))            # info always passes
    now[0] = 60
    assert repeats.next_cycle() == []                                # seen in that cycle
    assert not repeats.filter(_rec(logging.WARNING, "w1"))          # still holds
    assert repeats.filter(_rec(logging.ERROR, "e1"))                 # new
    now[0] = 120
    assert repeats.next_cycle() == []
    assert not repeats.filter(_rec(logging.ERROR, "e1"))
    now[0] = 180
    assert repeats.next_cycle() == ["w1"]                            # a cycle without it
    now[0] = 240
    assert repeats.next_cycle() == ["e1"]
    assert repeats.filter(_rec(logging.WARNING, "w1"))              # back: said again


def test_a_line_logged_less_often_than_cycles_run_still_holds():
    # The responder says it has no configuration once a second; cycles of 0.2 s in between
    # must not make it "clear" and come back over and over.
    now = [0.0]
    repeats = Repeats(clock=lambda: now[0])
    said = 0
    for tick in range(1, 51):
        now[0] = tick * 0.2
        if tick % 5 == 0:
            said += repeats.filter(_rec(logging.WARNING, "responder: no configuration yet"))
        assert repeats.next_cycle() == []
    assert said == 1


def test_not_configured_yet_and_missing_files(tmp_path):
    with pytest.raises(ConfigMissing, match=r"not configured yet: edit /etc/vac.conf \(it does not exist\)"):
        presence.require([], explicit=False)
    with pytest.raises(ConfigMissing, match=r"--config .*nope.conf: no such file"):
        presence.require([str(tmp_path / "nope.conf")], explicit=True)
    comments = tmp_path / "vac.conf"
    comments.write_text("# [settings]\n#vac_space = x\n")
    for explicit in (False, True):
        with pytest.raises(ConfigMissing, match="not configured yet: edit /etc/vac.conf"):
            presence.require([str(comments)], explicit=explicit)
    presence.require_named([str(comments)])   # it exists: state_dir_of may read it
    broken = tmp_path / "broken.conf"
    broken.write_text("vac_space = x\n")     # no section header: the loader's to reject
    presence.require([str(broken)], explicit=True)
    real = tmp_path / "real.conf"
    real.write_text("[settings]\n")
    presence.require([str(comments), str(real)], explicit=True)
