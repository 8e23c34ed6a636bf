# SPDX-License-Identifier: BSD-2-Clause
"""vac config check, vac slots and vacd end to end on the fake backend (real processes)."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from waiting import GENEROUS, wait_until

from vac import cli, daemon

CYCLE = re.compile(r"\bcycle \d+: created ")    # vacd's line at the end of each cycle

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
enable_fake_backend = true
host_processors = 3
overload_per_processor = 1000

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {template}
fake_run_seconds = 3600
"""


@pytest.fixture(autouse=True)
def keep_logging():
    """vacd replaces the root logger's handlers; give later tests theirs back."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def conf(tmp_path):
    template = tmp_path / "user_data"
    template.write_text("#!/bin/sh\necho ##user_data_machinetype##\n")
    path = tmp_path / "vac.conf"
    path.write_text(CONF.format(state=tmp_path / "state", template=template))
    return path


def test_config_check_lists_machinetypes_with_origins(conf, capsys):
    assert cli.main(["--config", str(conf), "config", "check"]) == 0
    out = capsys.readouterr().out
    assert "configuration OK" in out and "[machinetype alpha]" in out
    assert f"# {conf}:12 [machinetype alpha]" in out      # FILE:LINE [SECTION] (issue 23)
    assert cli.main(["--config", str(conf), "config", "check", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["machinetypes"]["alpha"]["target_share"] == {
        "value": 1.0, "from": f"{conf} [machinetype alpha]"}
    assert data["machinetypes"]["alpha"]["backoff_seconds"]["from"] == "default"


def test_config_check_reports_every_problem_located(tmp_path, capsys):
    bad = tmp_path / "bad.conf"
    bad.write_text("[settings]\nvac_space = s.example.com\nfactory_name = f.example.com\n"
                   "mb_per_processor = lots\n[machinetype x]\nmachine_model = xen\n")
    assert cli.main(["--config", str(bad), "config", "check"]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4 [settings] mb_per_processor: 'lots' is not a valid integer" in err
    assert f"{bad}:6 [machinetype x] machine_model: unknown machine_model 'xen'" in err


def test_slots_before_any_cycle(conf, capsys):
    assert cli.main(["--config", str(conf), "slots", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["slots"]
    assert [r["name"] for r in rows] == ["f1-00.example.com", "f1-01.example.com",
                                         "f1-02.example.com"]
    assert all("no cycle has run yet" in r["detail"] for r in rows)
    assert out["cycle"] == {"time": None, "errors": 0, "error_lines": [], "config_error": None}


def test_vacd_cycles_then_vac_slots_shows_machines(conf, capsys, tmp_path):
    assert daemon.main(["--config", str(conf), "--foreground", "--cycles", "2",
                        "--cycle-seconds", "0"]) == 0
    assert cli.main(["--config", str(conf), "slots", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["slots"]
    assert {r["state"] for r in rows} == {"Running"}
    assert {r["errors"] for r in rows} == {0} and out["cycle"]["errors"] == 0
    assert {r["machinetype"] for r in rows} == {"alpha"}
    assert os.path.exists(tmp_path / "state" / "factory-heartbeat")


def test_vac_slots_explains_idle_slots(conf, capsys):
    text = conf.read_text().replace("target_share = 1", "target_share = 0")
    conf.write_text(text)
    daemon.main(["--config", str(conf), "--foreground", "--cycles", "1"])
    cli.main(["--config", str(conf), "slots"])
    out = capsys.readouterr().out
    assert out.count("idle:") == 3


def test_sigterm_stops_vacd_and_leaves_machines(conf, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "vac.daemon", "--config", str(conf),
                             "--foreground", "--cycle-seconds", "30"],
                            stderr=subprocess.PIPE, text=True)
    fake = tmp_path / "state" / "fake-backend.json"
    deadline = time.time() + GENEROUS
    while not fake.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "machines keep running" in err
    assert len(json.loads(fake.read_text())) == 3


def test_sighup_runs_the_next_cycle_at_once(conf, tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "vac.daemon", "--config", str(conf),
                             "--foreground", "--cycle-seconds", "300"],
                            stderr=subprocess.PIPE, text=True)
    heartbeat = tmp_path / "state" / "factory-heartbeat"
    deadline = time.time() + GENEROUS
    while not heartbeat.exists() and time.time() < deadline:
        time.sleep(0.1)
    first = heartbeat.stat().st_mtime_ns
    time.sleep(1.1)  # heartbeat contents have one-second resolution
    proc.send_signal(signal.SIGHUP)
    deadline = time.time() + GENEROUS
    while heartbeat.stat().st_mtime_ns == first and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert heartbeat.stat().st_mtime_ns != first, err
    assert "SIGHUP" in err and err.count("cycle ") >= 2


def test_a_config_that_does_not_exist_is_named_and_no_lock_is_taken(tmp_path, capsys):
    missing = tmp_path / "nope.conf"
    assert daemon.main(["--config", str(missing), "--foreground", "--cycles", "1"]) == \
        daemon.EX_CONFIG
    err = capsys.readouterr().err
    assert f"--config {missing}: no such file" in err
    assert "no [settings] section" not in err


def test_vacd_on_a_rejected_configuration_keeps_cycling_then_takes_the_fix(conf, tmp_path):
    good = conf.read_text()
    conf.write_text(good.replace("machine_model = fake", "machine_model = dokcer"))
    fresh = tmp_path / "vac.conf.new"   # the fix lands whole: vacd may read at any moment
    fresh.write_text(good)
    proc = subprocess.Popen([sys.executable, "-m", "vac.daemon", "--config", str(conf),
                             "--foreground", "--cycle-seconds", "0.2"],
                            stderr=subprocess.PIPE, text=True)
    lines = []                          # vacd's log, read as it comes

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    fake = tmp_path / "state" / "fake-backend.json"
    try:
        # several cycles on the rejected file, however long they take: it must still be running
        assert wait_until(lambda: sum(bool(CYCLE.search(line)) for line in lines) >= 3
                          or proc.poll() is not None), "".join(lines)
        assert proc.poll() is None, "".join(lines)
        assert not fake.exists()
        os.replace(fresh, conf)
        deadline = time.time() + GENEROUS
        while not (fake.exists() and len(json.loads(fake.read_text())) == 3) \
                and time.time() < deadline:
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=GENEROUS)
        reader.join(GENEROUS)
    err = "".join(lines)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "AttributeError" not in err, err
    rejected = [line for line in err.splitlines() if " ERROR " in line]
    assert len(rejected) == 1 and "dokcer" in rejected[0], err   # not one per cycle
    assert len([line for line in err.splitlines() if " WARNING " in line]) <= 1, err
    assert len(json.loads(fake.read_text())) == 3, err
