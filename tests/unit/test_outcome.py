# SPDX-License-Identifier: BSD-2-Clause
"""vac.machine.outcome: one rule for shutdown codes and fizzles, the same for the planner, the
metrics and the status page."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from vac.machine.outcome import code_label, fizzled, is_abort, outcome_message
from vac.web.outcomes import finished_machine, fizzled_machine


@pytest.mark.parametrize("message, label", [
    ("200 Success", "200"), ("300-x", "300"), ("  500 site", "500"), ("²00 x", "none"),
    ("٣٠٠ x", "none"), ("Job done", "none"), ("", "none"), (None, "none"), ("30 x", "none"),
])
def test_the_label_of_a_code_is_the_code_the_planner_reads(message, label):
    assert code_label(message) == label
    assert (label != "none" and int(label) >= 300) == is_abort(message)


@pytest.mark.parametrize("started, ended, fizzle, result", [
    (0.0, 100.0, 600, True), (0.0, 600.0, 600, False), (0.0, 100.0, 0, False),
    (None, 100.0, 600, False), (0.0, None, 600, False),
])
def test_a_machine_fizzles_only_if_it_ran_too_short(started, ended, fizzle, result):
    assert fizzled(started, ended, fizzle) is result
    judged = outcome_message(None, started, ended, fizzle)
    assert (judged is not None and judged.startswith("300 Vac detects fizzle")) is result


def _directory(started, beat, finished, message=None):
    return SimpleNamespace(started=started, heartbeat_time=beat, finished=finished,
                           shutdown_message=message, path="/m/1_a_f1-00.example.com",
                           name="f1-00.example.com", machinetype="a", created=1,
                           cpu_seconds=0.0)


def test_a_machine_that_never_started_is_no_fizzle_on_the_pages_either():
    never = _directory(None, None, 1000.0, "700 creation failed")
    assert not fizzled_machine(never, 600)
    assert finished_machine(never, 600)["fizzled"] is False
    short = _directory(1000.0, 1100.0, 1200.0)
    assert fizzled_machine(short, 600) and finished_machine(short, 600)["fizzled"]
    assert not fizzled_machine(short, None)      # a machinetype no longer configured
