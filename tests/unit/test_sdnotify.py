# SPDX-License-Identifier: BSD-2-Clause
"""systemd's notify protocol against a real AF_UNIX datagram socket (a path and an abstract
name), the watchdog's interval and pinger. (vacd's own messages to a listening "systemd":
tests/integration/test_vacd_sdnotify.py.)"""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from vac.service.sdnotify import MAX_STATUS, Notifier, WatchdogPinger, one_line


@pytest.fixture
def listener(tmp_path):
    """A bound AF_UNIX datagram socket standing for systemd's notify socket: (socket, path)."""
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
