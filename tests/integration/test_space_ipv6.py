# SPDX-License-Identifier: BSD-2-Clause
"""The space on IPv6 and IPv4 loopback: an IPv6-only factory (::1), an IPv4-only
one (127.0.0.2) and a dual-stack one (vacquery_address unset: [::]) with live responders,
asked by the client under names that resolve to what each has; the cycle's space poll sums
all three; an original Vac 03 client (an IPv4 socket) is answered by a dual-stack factory
(an original factory, IPv4, answering our client: test_space_vac03); a name whose first address is dead is answered at its next one."""
from __future__ import annotations

import socket
import time

import pytest
from space_env import SPACE, Clock, SpaceFactory

from vac.space import client, responder
from vac.space import messages as m

NAMES = ["v6.example.com", "v4.example.com", "dual.example.com"]
BIND = {"v6.example.com": "::1", "v4.example.com": "127.0.0.2", "dual.example.com": ""}


def free_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture
def space(tmp_path, monkeypatch):
    ports = {name: free_port(socket.AF_INET6, "::") for name in NAMES}
    table = {"v6.example.com": [("::1", ports["v6.example.com"])],
             "v4.example.com": [("127.0.0.2", ports["v4.example.com"])],
             "dual.example.com": [("::1", ports["dual.example.com"]),
                                  ("127.0.0.1", ports["dual.example.com"])]}

    def resolver(name, port):
        return table.get(name, [])
    monkeypatch.setattr(client, "resolve", resolver)
    clock = Clock(time.time())
    factories = [SpaceFactory(tmp_path, name, BIND[name], ports[name], NAMES, clock,
                              resolver=resolver) for name in NAMES]
    for f in factories:
        f.start()
    for _ in range(2):
        for f in factories:
            f.factory.run_cycle()
    yield factories, table
    for f in factories:
        f.stop()


def test_the_default_responder_is_dual_stack_and_shown_whole():
    sock = responder.bind_udp("", 0)
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 0
    finally:
        sock.close()
    for address, family in (("::1", socket.AF_INET6), ("127.0.0.1", socket.AF_INET),
                            ("0.0.0.0", socket.AF_INET)):
        sock = responder.bind_udp(address, 0)
        assert sock.family == family
        sock.close()
    assert responder.shown("::1", 995) == "[::1]:995"
    assert responder.shown("", 995) == "[::]:995 (IPv6 and IPv4)"


def test_ipv6_only_ipv4_only_and_dual_stack_factories_all_answer(space):
    factories, _ = space
    result = client.query(m.MACHINES, SPACE, NAMES, 5.0)
    assert result.silent() == [] and result.short() == [] and result.refused == []
    for name in NAMES:
        assert sorted(result.replies[name]) == \
            [f"{name.split('.')[0]}-0{n}.example.com" for n in range(3)]
    assert result.rounds == 1    # each answered the first ask


def test_a_dual_stack_responder_answers_on_ipv4_too(space):
    factories, table = space
    port = table["dual.example.com"][0][1]
    result = client.query(m.FACTORY, SPACE, ["127.0.0.1"], 5.0,
                          addresses={"127.0.0.1": ("127.0.0.1", port)})
    assert result.replies["127.0.0.1"][""]["factory"] == "dual.example.com"
    result = client.query(m.FACTORY, SPACE, ["::1"], 5.0, addresses={"::1": ("::1", port)})
    assert result.replies["::1"][""]["factory"] == "dual.example.com"


def test_the_space_poll_sums_over_both_families(space):
    factories, _ = space
    poll = factories[1].poll
    poll._start_census = lambda *a: None
    got = poll(factories[1].factory.config, {}, time.time())
    assert poll.silent == []
    assert got["alpha"].running_machines == 6     # the two others' 3 each


def test_a_dead_first_address_is_passed_over_on_the_next_ask(space):
    factories, table = space
    dead = free_port(socket.AF_INET6, "::")
    port = table["dual.example.com"][0][1]
    result = client.query(m.MACHINETYPES, SPACE, ["dual.example.com"], 3.0,
                          addresses={"dual.example.com": [("::1", dead),
                                                          ("127.0.0.1", port)]})
    assert result.silent() == [] and result.asks["dual.example.com"] == 2


def test_an_original_ipv4_client_is_answered_by_a_dual_stack_factory(space):
    factories, _ = space
    original = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)   # as Vac 03 bound it
    original.bind(("127.0.0.3", 0))
    original.settimeout(5)
    try:
        salt = m.new_salt()
        query = m.make_query(m.FACTORY, SPACE, m.cookie_for(salt, "v6.example.com"), "x")
        # The original's client: an IPv4 socket to our dual-stack factory's IPv4 address.
        dual = factories[2]
        original.sendto(m.encode(query), ("127.0.0.1", dual.port))
        reply = m.decode_reply(original.recv(m.REPLY_LIMIT), SPACE, m.FACTORY, salt,
                               cookie_name="v6.example.com")
        assert reply["factory"] == "dual.example.com"
    finally:
        original.close()


@pytest.mark.parametrize("name, expected", [
    ("::1", "::1"), ("[::1]", "::1"), ("2001:DB8::0:1", "2001:db8::1"),
    ("127.0.0.1", "127.0.0.1")])
def test_addresses_are_kept_whole_as_factory_names(name, expected):
    assert client.canonical(name, "f1.example.com") == expected
