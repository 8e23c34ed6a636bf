# SPDX-License-Identifier: BSD-2-Clause
"""The responder's handling of one datagram, without its thread: replies from the state
directory with the query's cookie, the reply budget per sender, drops counted and logged at
most once per interval, the heartbeat file."""
from __future__ import annotations

import json
import logging
import os
import socket

import pytest

from vac.space import messages as m
from vac.space import responder as r

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 3

[machinetype alpha]
machine_model = fake
target_share = 1
"""
COOKIE = "ab" * 32


@pytest.fixture
def setup(make_config, paths):
    config = make_config(CONF)
    resp = r.Responder(lambda: config)
    resp.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    resp.sock.bind(("127.0.0.1", 0))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.settimeout(1)
    yield config, resp, peer
    resp.sock.close()
    peer.close()


def query(kind):
    return m.encode(m.make_query(kind, "vac01.example.com", COOKIE, "Vac 03.00.02 vac"))


def test_a_machines_query_gets_one_reply_per_slot_with_the_cookie(setup):
    config, resp, peer = setup
    assert resp.handle(config, query(m.MACHINES), peer.getsockname()) == 3
    replies = [json.loads(peer.recv(m.REPLY_LIMIT)) for _ in range(3)]
    assert [x["machine"] for x in replies] == [f"f1-0{n}.example.com" for n in range(3)]
    assert all(x["cookie"] == COOKIE and x["num_machines"] == 3 for x in replies)
    assert {x["state"] for x in replies} == {"Shut down"}   # empty slots are reported too
    assert replies[0]["vacquery_version"] == "VacQuery 01.03"


def test_a_machinetypes_query_gets_one_reply_per_machinetype(setup):
    config, resp, peer = setup
    assert resp.handle(config, query(m.MACHINETYPES), peer.getsockname()) == 1
    reply = json.loads(peer.recv(m.REPLY_LIMIT))
    assert reply["machinetype"] == "alpha" and reply["num_machinetypes"] == 1
    assert reply["running_hs06"] == 0.0 and reply["bytes_per_processor"] == 2048 * 1048576


def test_a_flood_from_one_sender_is_cut_at_its_budget(setup, caplog):
    config, resp, peer = setup
    resp._budget = r._Budget(rate=7)
    caplog.set_level(logging.WARNING)
    sent = [resp.handle(config, query(m.MACHINES), peer.getsockname()) for _ in range(5)]
    assert sent == [3, 3, 0, 0, 0]          # 7 replies' budget: two answers of three
    assert resp.dropped == 3
    assert len([x for x in caplog.records if "replies per second" in x.message]) == 1


def test_garbage_is_dropped_and_logged_once_per_interval(setup, caplog):
    config, resp, peer = setup
    caplog.set_level(logging.WARNING)
    for data in (b"x", b"{}", b"[]", query(m.FACTORY).replace(b"vac01", b"vac02")):
        assert resp.handle(config, data, peer.getsockname()) == 0
    assert resp.dropped == 4 and len(caplog.records) == 1


def test_the_heartbeat_is_written(setup):
    config, resp, _ = setup
    resp._heartbeat(config)
    with open(f"{config.settings.state_dir}/responder-heartbeat") as f:
        assert int(f.read()) > 0


def test_the_heartbeats_time_mtime_and_ctime_name_one_second(setup):
    """The original reports responder_heartbeat_time from the file's ctime; ours from its
    mtime: both, and the time written in it, are one second."""
    config, resp, _ = setup
    resp._heartbeat(config)
    path = f"{config.settings.state_dir}/responder-heartbeat"
    st = os.lstat(path)
    with open(path) as f:
        assert int(f.read()) == int(st.st_mtime) == int(st.st_ctime)
