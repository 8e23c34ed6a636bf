# SPDX-License-Identifier: BSD-2-Clause
"""systemd's notify protocol against a real AF_UNIX datagram socket (a path and an abstract
name), the watchdog's interval and pinger, and vacd telling a listening "systemd" READY=1 after
its first cycle with a STATUS= made from the cycle's record."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest
from testbed import REPO

from vac.service.sdnotify import MAX_STATUS, Notifier, WatchdogPinger, one_line


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(30)
    yield sock, path
    sock.close()


def test_ready_and_status_reach_the_socket(listener):
    sock, path = listener
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("cycle 1: 0 running, 2 idle, config OK")
    assert sock.recv(4096) == b"READY=1\nSTATUS=cycle 1: 0 running, 2 idle, config OK"
    assert notifier.status("two\nlines")
    assert sock.recv(4096) == b"STATUS=two lines"
    assert notifier.watchdog()
    assert sock.recv(4096) == b"WATCHDOG=1"


def test_an_abstract_socket_name_is_reached():
    name = f"vac-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(30)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).stopping("bye")
        assert sock.recv(4096) == b"STOPPING=1\nSTATUS=bye"


def test_without_systemd_nothing_is_sent_and_nothing_fails(tmp_path):
    for env in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1"},
                {"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")}):
        notifier = Notifier(env)
        assert notifier.ready("x") is False


def test_status_is_one_bounded_line():
    assert one_line("a\n b\tc") == "a b c"
    assert len(one_line("x" * 5000)) == MAX_STATUS


def test_watchdog_interval_is_for_this_process_only():
    assert Notifier({"WATCHDOG_USEC": "120000000"}).watchdog_seconds == 120.0
    assert Notifier({"WATCHDOG_USEC": "120000000",
                     "WATCHDOG_PID": str(os.getpid())}).watchdog_seconds == 120.0
    assert Notifier({"WATCHDOG_USEC": "120000000", "WATCHDOG_PID": "1"}).watchdog_seconds is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_seconds is None
    assert Notifier({}).watchdog_seconds is None


def test_the_pinger_stops_pinging_when_the_main_loop_stalls(listener):
    sock, path = listener
    now = [1000.0]
    pinger = WatchdogPinger(Notifier({"NOTIFY_SOCKET": path}), stall_seconds=60,
                            clock=lambda: now[0])
    assert pinger.beat() and sock.recv(4096) == b"WATCHDOG=1"
    now[0] += 59
    assert pinger.beat() and sock.recv(4096) == b"WATCHDOG=1"
    now[0] += 2        # the main loop has not ticked for 61 s: hung
    assert pinger.beat() is False
    pinger.tick()      # it turns again
    assert pinger.beat() and sock.recv(4096) == b"WATCHDOG=1"


def test_the_pinger_thread_pings_at_a_third_of_the_interval(listener):
    sock, path = listener
    pinger = WatchdogPinger(Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "300000"}),
                            stall_seconds=3600)
    pinger.start()
    try:
        assert [sock.recv(4096) for _ in range(3)] == [b"WATCHDOG=1"] * 3
    finally:
        pinger.stop()


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
