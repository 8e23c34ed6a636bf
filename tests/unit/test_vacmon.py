# SPDX-License-Identifier: BSD-2-Clause
"""VacMon datagrams received on a loopback socket and decoded: factory_status and every
machinetype_status each cycle, one machine_status per finished machine sent after its
`finished` file (final state and shutdown message), the version logger off unless set."""
from __future__ import annotations

import json
import socket

import pytest

from vac.space import messages
from vac.space import vacmon

PORT = 19154


@pytest.fixture
def listener():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", PORT))
    sock.settimeout(0.2)
    yield sock
    sock.close()


def received(sock):
    found = []
    while True:
        try:
            data, _ = sock.recvfrom(65536)
        except socket.timeout:
            return found
        found.append(json.loads(data.decode()))


def by_type(found, kind):
    return [m for m in found if m["message_type"] == kind]


def test_each_cycle_sends_factory_and_machinetype_status_and_each_finish_one_machine_status(
        world, listener):
    w = world(settings=f"gocdb_sitename = UKI-EXAMPLE\nvacmon_hostport = 127.0.0.1:{PORT}")
    w.run()
    first = received(listener)
    assert [m["message_type"] for m in first] == ["factory_status", "machinetype_status"]
    for m in first:
        assert m["cookie"] == "0" and m["space"] == "vac01.example.com"
        assert m["factory"] == "f1.example.com" and m["site"] == "UKI-EXAMPLE"
        assert m["vacquery_version"] == messages.VACQUERY_VERSION
        assert m["vac_version"].endswith(" vacd-factory")
    assert by_type(first, "machinetype_status")[0]["machinetype"] == "alpha"
    w.run(1)
    running = received(listener)
    assert by_type(running, "factory_status")[0]["running_machines"] == 2
    assert by_type(running, "machinetype_status")[0]["running_machines"] == 2
    assert by_type(running, "machine_status") == []
    w.run(1500)
    second = received(listener)
    finished = by_type(second, "machine_status")
    assert sorted(m["machine"] for m in finished) == ["f1-00.example.com", "f1-01.example.com"]
    for m in finished:
        assert m["state"] == "Shut down" and m["shutdown_message"] == "200 Success"
        assert m["machinetype"] == "alpha" and m["uuid"] and m["num_machines"] == 1
        assert m["cpu_seconds"] == 500.0
    assert len(by_type(second, "factory_status")) == 1
    assert second.index(finished[-1]) < second.index(by_type(second, "factory_status")[0])
    w.run(1)
    assert by_type(received(listener), "machine_status") == []    # each finish once


def test_nothing_is_sent_without_vacmon_hostport(world, listener):
    w = world()
    w.run()
    w.run(1500)
    assert received(listener) == []


def test_an_unresolvable_destination_is_logged_not_raised(world, caplog):
    w = world()
    sender = vacmon.Sender([("no-such-host.invalid", 8884)])
    assert sender.cycle_status(w.load(), 0.0) == 0 and sender.failures == 2


def test_the_version_logger_is_off_unless_set_then_sends_five_copies_at_start_and_daily(
        world, listener, monkeypatch):
    from vac.accounting import percycle

    monkeypatch.setattr(percycle, "VERSION_LOGGER", ("127.0.0.1", PORT))
    monkeypatch.setattr(percycle, "VERSION_INTERVAL", 0.01)
    monkeypatch.setattr(percycle, "_logged_since_start", percycle.threading.Event())
    w = world()
    w.paths.ensure()
    assert w.load().settings.version_logger == 0
    assert percycle._version_logger(w.load(), w.clock.now) is None
    w.write("version_logger = 2")
    config = w.load()
    thread = percycle._version_logger(config, w.clock.now)
    thread.join(5)
    copies = received(listener)
    assert [m["message_type"] for m in copies] == ["factory_status"] * 5
    assert percycle._version_logger(config, w.clock.now + 3600) is None    # 2 a day
    thread = percycle._version_logger(config, w.clock.now + 43201)
    thread.join(5)
    assert len(received(listener)) == 5
