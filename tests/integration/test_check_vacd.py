# SPDX-License-Identifier: BSD-2-Clause
"""scripts/check-vacd, run as the program NRPE runs: its three states, one status line each."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from testbed import REPO

from vac import planfile

SCRIPT = os.path.join(REPO, "scripts", "check-vacd")


def probe(state, *args):
    done = subprocess.run([sys.executable, SCRIPT, *args, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=30,
                          env=dict(os.environ, PYTHONPATH=REPO))
    assert done.stdout.count("\n") == 1 and done.stderr == "", done
    return done.returncode, done.stdout.strip()


@pytest.fixture
def state(tmp_path):
    d = tmp_path / "state"
    d.mkdir()
    for name in ("factory-heartbeat", "responder-heartbeat"):
        (d / name).write_text("1")
    (d / "counts").write_text("3 8 5 8 50.00")
    record(d)
    return d


def record(state, **fields):
    """plan.json as vacd writes it (through its one writer)."""
    planfile.write(str(state / "plan.json"), planfile.PlanRecord(time=time.time(), **fields))


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
    record(state, errors=("f1-01: destroy failed: x",))
    assert probe(state) == (1, "WARNING: last cycle had 1 errors: f1-01: destroy failed: x "
                               "(3/8 5/8)")
    record(state)
    (state / "apel-rejected").mkdir()
    (state / "apel-rejected" / "abc").write_text("record")
    (state / "apel-rejected" / "abc.reason").write_text("why")
    assert probe(state) == (1, "WARNING: 1 APEL records rejected (see apel-rejected/) (3/8 5/8)")


def test_a_bad_argument_is_unknown_and_unreadable_counts_drop_the_suffix(state):
    assert probe(state, "soon")[0] == 3
    (state / "counts").write_text("garbage")
    assert probe(state) == (0, "OK: Factory + responder ok")


def test_critical_with_the_reason_while_the_configuration_is_rejected_or_missing(state):
    error = "/etc/vac.conf:[machinetype lhcb]:machine_model: unknown machine_model 'dokcer'"
    record(state, config_state=planfile.CONFIG_REJECTED_STATE, config_error=error)
    (state / "factory-error").write_text(f"configuration rejected: {error}\n")
    assert probe(state) == (2, f"CRITICAL: configuration rejected: {error} (3/8 5/8)")
    missing = "not configured yet: edit /etc/vac.conf (it does not exist)"
    record(state, config_state=planfile.CONFIG_MISSING, config_error=missing)
    os.unlink(state / "factory-error")
    assert probe(state) == (2, f"CRITICAL: {missing} (3/8 5/8)")
    record(state)
    assert probe(state) == (0, "OK: Factory + responder ok (3/8 5/8)")


def test_a_factory_with_a_rejected_configuration_is_critical_until_it_is_fixed(tmp_path,
                                                                              make_factory):
    factory, fake, clock = make_factory()

    def cycle():
        """A cycle on the fake clock, then the heartbeats as a live vacd keeps them."""
        factory.run_cycle()
        for name in ("factory-heartbeat", "responder-heartbeat"):
            with open(os.path.join(state, name), "a"):
                pass
            os.utime(os.path.join(state, name))

    state = factory.pool.settings.paths.state_dir
    cycle()
    conf = tmp_path / "vac.conf"
    good = conf.read_text()
    conf.write_text(good.replace("machine_model = fake", "machine_model = dokcer"))
    clock.now += 60
    cycle()
    code, line = probe(state)
    assert code == 2 and line.startswith("CRITICAL: configuration rejected: "), line
    assert line.count("dokcer") == 1     # said once, though factory-error says it too
    conf.write_text(good)
    clock.now += 60
    cycle()
    assert probe(state)[0] == 0
