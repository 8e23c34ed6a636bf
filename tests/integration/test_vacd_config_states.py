# SPDX-License-Identifier: BSD-2-Clause
"""A real vacd process with Docker machines while its configuration is rejected: it
never stops, creates nothing, keeps the machines that run, says why once in its log and
check-vacd goes CRITICAL naming the problem; a fixed file is picked up (at the next cycle or at
SIGHUP) and check-vacd is OK again. Started on a rejected file, and rejected by an edit while
machines run. (No configuration at all needs the default state directory: the guest's systemd
test, tests/integration/test_vacd_systemd.py, covers it.)"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Dict

import pytest
from docker_engine import engine_ready
from dockerfactory import DockerFactory
from testbed import REPO
from vacd_process import cycles_logged, start_vacd, stop
from waiting import wait_until

pytestmark = [pytest.mark.docker]

PAYLOAD = "#!/bin/sh\nexec sleep 3600\n"
QUIET = "vacquery_port = 0\nvacquery_address = 127.0.0.1"
SLOTS = 2


@pytest.fixture
def dock(tmp_path, make_config):
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    world.write(PAYLOAD, slots=SLOTS, extra_settings=QUIET)
    world.good = open(world.config_file).read()
    yield world
    world.remove_all()


def replace_config(dock, text: str) -> None:
    fresh = dock.config_file + ".new"
    with open(fresh, "w") as f:
        f.write(text)
    os.replace(fresh, dock.config_file)


def broken(dock) -> str:
    return dock.good.replace("machine_model = docker", "machine_model = dokcer")


def check_vacd(dock) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "check-vacd"),
                           "--state-dir", dock.state], capture_output=True, text=True,
                          timeout=60)


def running_ids(dock) -> Dict[str, str]:
    return {name: c["Id"] for name, c in dock.containers().items()
            if c.get("State") == "running"}


def errors_logged(log_path: str) -> list:
    with open(log_path) as f:
        return [line for line in f if ": ERROR " in line]


def test_started_on_a_rejected_configuration_then_fixed(dock, tmp_path):
    log = str(tmp_path / "vacd.log")
    replace_config(dock, broken(dock))
    vacd = start_vacd(dock.config_file, log)
    try:
        assert wait_until(lambda: len(cycles_logged(log)) >= 3), open(log).read()
        assert vacd.poll() is None, open(log).read()
        assert running_ids(dock) == {}
        critical = check_vacd(dock)
        assert critical.returncode == 2 and "dokcer" in critical.stdout, critical.stdout
        errors = errors_logged(log)
        assert len(errors) == 1 and "dokcer" in errors[0], errors
        replace_config(dock, dock.good)            # picked up at the next cycle
        assert wait_until(lambda: len(running_ids(dock)) == SLOTS), open(log).read()
        assert wait_until(lambda: check_vacd(dock).returncode == 0), check_vacd(dock).stdout
        # The rejection's end is said once it has not held for a while (Repeats).
        assert wait_until(lambda: "INFO no longer reported: configuration rejected"
                          in open(log).read()), open(log).read()
    finally:
        stop(vacd, signal.SIGTERM, timeout=120)
    assert vacd.returncode == 0, open(log).read()
    assert len(running_ids(dock)) == SLOTS, "stopping vacd left every machine running"


def test_a_broken_edit_keeps_the_machines_and_sighup_brings_the_fix(dock, tmp_path):
    log = str(tmp_path / "vacd.log")
    vacd = start_vacd(dock.config_file, log, extra=["--cycle-seconds", "600"])
    try:
        assert wait_until(lambda: len(running_ids(dock)) == SLOTS), open(log).read()
        machines = running_ids(dock)
        vacd.send_signal(signal.SIGHUP)            # a cycle that sees them running
        assert wait_until(lambda: check_vacd(dock).returncode == 0), check_vacd(dock).stdout
        replace_config(dock, broken(dock))
        for _ in range(3):                         # several cycles on the rejected file
            seen = len(cycles_logged(log))
            vacd.send_signal(signal.SIGHUP)
            assert wait_until(lambda: len(cycles_logged(log)) > seen), open(log).read()
        assert vacd.poll() is None, open(log).read()
        critical = check_vacd(dock)
        assert critical.returncode == 2 and "dokcer" in critical.stdout, critical.stdout
        assert running_ids(dock) == machines
        errors = errors_logged(log)
        assert len(errors) == 1 and "dokcer" in errors[0], errors
        replace_config(dock, dock.good)
        vacd.send_signal(signal.SIGHUP)
        assert wait_until(lambda: check_vacd(dock).returncode == 0), check_vacd(dock).stdout
        assert running_ids(dock) == machines
    finally:
        stop(vacd, signal.SIGTERM, timeout=120)
    assert vacd.returncode == 0, open(log).read()
    assert running_ids(dock) == machines
