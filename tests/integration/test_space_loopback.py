# SPDX-License-Identifier: BSD-2-Clause
"""The space on loopback: three fake-backend factories with live responders on 127.0.0.1-3,
queried by the client, `vac machines`/`machinetype`/`factories`, and the cycle's space poll
(shares summed over the space, an abort elsewhere backs off here, a silent factory left out).
"""
from __future__ import annotations

import json
import os
import socket
import time

import pytest
from space_env import SPACE, Clock, SpaceFactory, free_udp_port, loopback_resolver
from waiting import GENEROUS, Stopwatch

from vac import __version__, cli
from vac.machine.directory import MachineDir
from vac.space import client
from vac.space import messages as m

NAMES = ["f1.example.com", "f2.example.com", "f3.example.com"]
TABLE = {name: f"127.0.0.{i + 1}" for i, name in enumerate(NAMES)}


@pytest.fixture
def space(tmp_path, monkeypatch):
    port = free_udp_port()
    clock = Clock(time.time())
    resolver = loopback_resolver(TABLE)
    monkeypatch.setattr(client, "resolve", resolver)
    factories = [SpaceFactory(tmp_path, name, TABLE[name], port, NAMES, clock,
                              resolver=resolver) for name in NAMES]
    for f in factories:
        f.start()
    for _ in range(2):   # the counts file shows the first cycle's machines from the second on
        for f in factories:
            f.factory.run_cycle()
    yield factories
    for f in factories:
        f.stop()


def ask(kind, names=NAMES, timeout=3.0, port=None, space_name=SPACE):
    return client.query(kind, space_name, names, timeout, port=port,
                        resolver=loopback_resolver(TABLE))


def _all_in(space) -> Stopwatch:
    """What a query every factory answers takes here now (the reference of the bounds)."""
    answered = Stopwatch()
    assert answered.time(lambda: ask(m.MACHINES, port=space[0].port)).silent() == []
    return answered


def test_machines_query_returns_every_slot_as_soon_as_all_are_in(space):
    began = time.monotonic()
    result = ask(m.MACHINES, timeout=10.0, port=space[0].port)
    took = time.monotonic() - began
    assert result.silent() == []
    assert sorted(result.replies) == NAMES
    assert all(len(result.replies[n]) == 3 and result.expected[n] == 3 for n in NAMES)
    assert took < 5.0, f"waited {took:.2f}s of the 10 s timeout for replies that were all in"
    reply = result.replies["f2.example.com"]["f2-01.example.com"]
    assert reply["state"] == "Running" and reply["machinetype"] == "alpha"
    assert reply["machine_model"] == "fake" and reply["num_processors"] == 1


def test_machinetypes_and_factory_replies_carry_the_census_and_capacity(space):
    result = ask(m.MACHINETYPES, port=space[0].port)
    alpha = result.replies["f3.example.com"]["alpha"]
    assert alpha["running_hs06"] == 3.0 and alpha["running_machines"] == 3
    assert alpha["num_before_fizzle"] == 3 and result.expected["f3.example.com"] == 2
    beat = os.path.join(space[0].factory.config.settings.state_dir, "responder-heartbeat")
    deadline = time.monotonic() + GENEROUS
    while not os.path.exists(beat) and time.monotonic() < deadline:
        time.sleep(0.1)
    space[0].responder._cache.clear()
    factory = ask(m.FACTORY, port=space[0].port).replies["f1.example.com"][""]
    assert factory["max_processors"] == 3 and factory["running_machines"] == 3
    assert factory["responder_heartbeat_time"] > 0 and factory["mem_total_kb"] > 0


def test_a_stopped_factory_is_silent_and_the_call_ends_at_the_timeout(space):
    bound = 1.2 + _all_in(space).bound(3, 0.8)      # the timeout, then about one whole query
    space[2].stop()
    began = time.monotonic()
    result = ask(m.MACHINES, timeout=1.2, port=space[0].port)
    took = time.monotonic() - began
    assert result.silent() == ["f3.example.com"]
    assert sorted(result.replies) == NAMES[:2]
    assert 1.0 <= took < bound and result.rounds == client.ROUNDS


def test_vac_machines_machinetype_and_factories_commands(space, capsys):
    conf = str(space[0].conf)
    assert cli.main(["--config", conf, "machines", "-t", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["Machine", "Machinetype", "State", "Procs", "Type", "Info",
                                "CPU%"]
    assert len(lines) == 11 and lines[1].startswith("f1-00           alpha")
    assert "Running" in lines[1] and " 1 ?? " in lines[1]
    assert lines[10] == "Total: 9 running machines, 9 processors, 9.0 HS06 in 9 slots on " \
                        "3 factories"
    assert cli.main(["--config", conf, "machines", "--json", "f2", "."]) == 0
    replies = json.loads(capsys.readouterr().out)
    assert sorted({r["factory"] for r in replies}) == ["f1.example.com", "f2.example.com"]
    assert len(replies) == 6
    assert cli.main(["--config", conf, "machinetype", "alpha"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Factory Running HS06")
    assert out[1] == 'f1  3   3.0 - "-"' and out[-1].startswith("Total: 9 running alpha")
    with pytest.raises(SystemExit) as caught:      # a wrong argument, as everywhere
        cli.main(["--config", conf, "machinetype"])
    assert caught.value.code == 2
    capsys.readouterr()
    space[1].stop()
    assert cli.main(["--config", conf, "factories", "-t", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Factory Processors")
    assert out[1].startswith("f1  3/3  3/3 ")
    assert out[1].endswith(f'"Vac {__version__} vacd-responder"')
    assert out[-1] == "f2 (silent: no reply in 1 s; in the census 0h00m ago)"   # the census


def test_an_unknown_machinetype_is_said_so_with_exit_1(space, capsys):
    conf = str(space[0].conf)
    assert cli.main(["--config", conf, "machinetype", "nosuch", "-t", "3"]) == 1
    captured = capsys.readouterr()
    assert captured.err == "vac: no machinetype nosuch on the 3 factories that answered\n"
    assert captured.out.splitlines()[-1] == "Total: 0 running nosuch machines, 0.0 HS06 on " \
                                            "0 factories"
    assert cli.main(["--config", conf, "machinetype", "--json", "nosuch", "-t", "3"]) == 1
    assert json.loads(capsys.readouterr().out) == []


def test_nothing_answering_exits_1_and_says_why_for_each_factory(space, capsys):
    conf = str(space[0].conf)
    bound = 0.6 + _all_in(space).bound(3, 4.4)      # the timeout, then about one whole query
    for f in space:
        f.stop()
    began = time.monotonic()
    code = cli.main(["--config", conf, "factories", "-t", "0.6", "f1", "nosuch.invalid"])
    took = time.monotonic() - began
    assert code == 1 and took < bound
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-2:] == [
        "f1 (silent: no reply in 0.6 s; in the census 0h00m ago)",
        "nosuch.invalid (silent: does not resolve)"]
    assert captured.err == ("vac: no factory answered (2 asked: 1 do not resolve, 1 sent no "
                            "reply in 0.6 s)\n")
    for command in (["machines"], ["machinetype", "alpha"]):
        assert cli.main(["--config", conf, *command, "-t", "0.3"]) == 1
        assert "no factory answered" in capsys.readouterr().err


def test_a_factory_asked_by_address_answers_at_once_under_that_address(space, capsys,
                                                                       monkeypatch):
    addresses = {address: address for address in ("127.0.0.2", "127.0.0.3", "127.0.0.9")}
    resolver = loopback_resolver({**TABLE, **addresses})
    monkeypatch.setattr(client, "resolve", resolver)
    began = time.monotonic()
    result = client.query(m.MACHINES, SPACE, ["127.0.0.2"], 10, port=space[0].port)
    took = time.monotonic() - began
    assert result.silent() == [] and took < 5, f"waited {took:.1f}s for an address that answers"
    assert sorted(result.replies["127.0.0.2"]) == [f"f2-0{n}.example.com" for n in range(3)]
    conf = str(space[0].conf)
    assert cli.main(["--config", conf, "factories", "-t", "10", "127.0.0.3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith("127.0.0.3  3/3  3/3 ") and out[-1].startswith("Total: 3/3")
    # where nothing listens, an address is silent under its whole address
    assert cli.main(["--config", conf, "factories", "-t", "0.6", "127.0.0.9"]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == "127.0.0.9 (silent: no reply in 0.6 s)"


def test_a_wrong_space_gets_no_answer(space):
    result = ask(m.FACTORY, timeout=0.6, port=space[0].port, space_name="other.example.com")
    assert result.silent() == NAMES


def test_the_space_poll_sums_shares_over_the_factories(space):
    f1 = space[0]
    config = f1.factory.config
    census = f1.poll(config, {}, f1.clock.now)
    assert census["alpha"].running_hs06 == 6.0   # f2 and f3; the local census was empty
    assert f1.poll.silent == []
    assert "beta" in census and census["beta"].running_hs06 == 0.0


def good_end(f, name):
    directory = MachineDir.for_slot(f.factory.config.settings.paths, name)
    directory.write("joboutputs/shutdown_message", "200 Success\n")
    f.fake.destroy(name, directory)


def test_an_abort_on_another_factory_backs_off_here(space):
    f1, f2 = space[0], space[1]
    for n in range(3):   # f2's machines say there is no work, and stop
        name = f"f2-0{n}.example.com"
        directory = MachineDir.for_slot(f2.factory.config.settings.paths, name)
        directory.write("joboutputs/shutdown_message", "300 Nothing to do\n")
        f2.fake.destroy(name, directory)
    f2.clock.now += 200          # the same clock for all three
    f2.factory.run_cycle()       # finishes them: the last alpha outcome on f2 is an abort
    f2.responder._cache.clear()
    status = ask(m.MACHINETYPES, names=["f2.example.com"], port=f1.port)
    alpha = status.replies["f2.example.com"]["alpha"]
    assert alpha["shutdown_message"] == "300 Nothing to do" and alpha["shutdown_time"]
    good_end(f1, "f1-00.example.com")      # a slot to refill on f1, after a good run
    report = f1.factory.run_cycle()
    assert "f1-00.example.com" not in report.created
    reason = report.idle["f1-00.example.com"]
    assert "backoff of alpha until" in reason and ": abort on f2 at " in reason, reason
    f3 = space[2]
    good_end(f3, "f3-00.example.com")
    f2.stop()                     # the abort is no longer reported: f3 refills at once
    f3.clock.now += 1
    report = f3.factory.run_cycle()
    assert "f3-00.example.com" in report.created, report.idle


def test_hostile_datagrams_are_dropped_and_the_responder_answers_on(space):
    target = (TABLE["f1.example.com"], space[0].port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in (b"", b"\x00" * 2000, b"{}", b'{"cookie": "ab", "space": "x"}',
                     json.dumps({"space": SPACE, "cookie": "f" * 64,
                                 "vacquery_version": m.VACQUERY_VERSION,
                                 "message_type": "x"}).encode()):
            s.sendto(data, target)
    result = ask(m.FACTORY, names=["f1.example.com"], port=space[0].port)
    assert result.silent() == []
    assert space[0].responder.dropped >= 4
