# SPDX-License-Identifier: BSD-2-Clause
"""vacd telling a listening "systemd" (a real AF_UNIX datagram socket) READY=1 after its first
cycle, with a STATUS= made from the cycle's record, then STATUS= each cycle and STOPPING=1."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from testbed import REPO


@pytest.fixture
def listener(tmp_path):
    """A bound AF_UNIX datagram socket standing for systemd's notify socket: (socket, path)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(30)
    yield sock, path
    sock.close()


CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
enable_fake_backend = true
host_processors = 2
overload_per_processor = 1000
vacquery_port = 0

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {template}
fake_run_seconds = 3600
"""


def _conf(tmp_path, text=None):
    template = tmp_path / "user_data"
    template.write_text("#!/bin/sh\necho ##user_data_machinetype##\n")
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=tmp_path / "state", template=template))
    return conf


def _vacd(tmp_path, path, conf, cycles):
    env = dict(os.environ, PYTHONPATH=REPO, NOTIFY_SOCKET=path, WATCHDOG_USEC="600000000")
    env.pop("JOURNAL_STREAM", None)
    return subprocess.run([sys.executable, "-m", "vac.daemon", "--config", str(conf),
                           "--foreground", "--cycles", str(cycles), "--cycle-seconds", "0"],
                          cwd=REPO, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120)


def _messages(sock):
    sock.settimeout(0.5)
    found = []
    try:
        while True:
            found.append(sock.recv(4096).decode())
    except socket.timeout:
        return found


def test_vacd_says_ready_after_its_first_cycle_then_status_each_cycle(listener, tmp_path):
    sock, path = listener
    conf = _conf(tmp_path)
    done = _vacd(tmp_path, path, conf, 2)
    assert done.returncode == 0, done.stderr
    messages = [m for m in _messages(sock) if m != "WATCHDOG=1"]
    # The first cycle creates the machines (starting), the second sees them run.
    assert messages[0].startswith("READY=1\nSTATUS=cycle 1: "), messages
    assert messages[0].endswith("config OK"), messages
    assert messages[1].startswith("STATUS=cycle 2: 2 running, 0 idle, config OK"), messages
    assert messages[-1].startswith("STOPPING=1"), messages


def test_vacd_on_a_rejected_configuration_is_ready_and_says_why(listener, tmp_path):
    sock, path = listener
    conf = _conf(tmp_path)
    conf.write_text(conf.read_text().replace("machine_model = fake", "machine_model = dokcer"))
    done = _vacd(tmp_path, path, conf, 2)
    assert done.returncode == 0, done.stderr
    messages = [m for m in _messages(sock) if m != "WATCHDOG=1"]
    assert messages[0].startswith("READY=1\nSTATUS=cycle 1: "), messages
    assert "configuration rejected" in messages[0] and "dokcer" in messages[0], messages
    assert "dokcer" in messages[1], messages
