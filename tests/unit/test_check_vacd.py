# SPDX-License-Identifier: BSD-2-Clause
"""scripts/check-vacd, run as the program NRPE runs: its three states, one status line each."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import REPO

SCRIPT = os.path.join(REPO, "scripts", "check-vacd")


def probe(state, *args):
    done = subprocess.run([sys.executable, SCRIPT, *args, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=30)
    assert done.stdout.count("\n") == 1 and done.stderr == "", done
    return done.returncode, done.stdout.strip()


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    for name in ("factory-heartbeat", "responder-heartbeat"):
        (d / name).write_text("1")
    (d / "counts").write_text("3 8 5 8 50.00")
    (d / "plan.json").write_text(json.dumps({"errors": []}))
    return d


def test_ok_with_the_counts(state):
    assert probe(state) == (0, "OK: Factory + responder ok (3/8 5/8)")


def test_critical_when_a_heartbeat_is_old_or_missing_or_a_factory_error_exists(state):
    old = time.time() - 7200
    os.utime(state / "factory-heartbeat", (old, old))
    assert probe(state) == (2, "CRITICAL: factory-heartbeat is 2.0 hours old (3/8 5/8)")
    assert probe(state, "10000")[0] == 0            # within a longer timeout
    os.unlink(state / "responder-heartbeat")
    code, line = probe(state, "10000")
    assert (code, line) == (2, "CRITICAL: responder-heartbeat missing (3/8 5/8)")
    (state / "responder-heartbeat").write_text("1")
    (state / "factory-error").write_text("f1-00 (alpha) creation fails with: no image\nmore\n")
    assert probe(state, "10000") == (
        2, "CRITICAL: f1-00 (alpha) creation fails with: no image (3/8 5/8)")


def test_warning_when_the_last_cycle_had_errors_or_records_were_rejected(state):
    (state / "plan.json").write_text(json.dumps({"errors": ["f1-01: destroy failed: x"]}))
    assert probe(state) == (1, "WARNING: last cycle had 1 errors: f1-01: destroy failed: x "
                               "(3/8 5/8)")
    (state / "plan.json").write_text(json.dumps({"errors": []}))
    (state / "apel-rejected").mkdir()
    (state / "apel-rejected" / "abc").write_text("record")
    (state / "apel-rejected" / "abc.reason").write_text("why")
    assert probe(state) == (1, "WARNING: 1 APEL records rejected (see apel-rejected/) (3/8 5/8)")


def test_a_bad_argument_is_unknown_and_unreadable_counts_drop_the_suffix(state):
    assert probe(state, "soon")[0] == 3
    (state / "counts").write_text("garbage")
    assert probe(state) == (0, "OK: Factory + responder ok")
