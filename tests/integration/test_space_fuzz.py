# SPDX-License-Identifier: BSD-2-Clause
"""Fuzzing a live responder: 100,000 random and mutated datagrams (garbage bytes, truncated
and bit-flipped queries, valid JSON with wrong types, values and sizes, other spaces and
versions, legacy methods, floods of valid queries) at a responder thread on loopback. It
keeps answering correctly, drops what it must, and its memory stays bounded."""
from __future__ import annotations

import json
import os
import random
import socket
import time

import pytest
from space_env import SPACE, Clock, SpaceFactory, free_udp_port

from vac.space import client
from vac.space import messages as m

COUNT = int(os.environ.get("VAC_FUZZ_COUNT", "100000"))
NAME = "f1.example.com"


def valid_query(rng: random.Random) -> dict:
    kind = rng.choice([m.MACHINES, m.MACHINETYPES, m.FACTORY])
    return m.make_query(kind, SPACE, f"{rng.getrandbits(256):064x}", "Vac 03.00.02 vac")


VALUES = [None, True, 0, -1, 2 ** 70, 1.5e308, "", "x" * 900, [], {}, [1, [2, [3]]],
          {"a": {"b": 1}}, "machines", "VacQuery 01.03", SPACE, "\u0000\udfff"[:1]]


def mutate(rng: random.Random) -> bytes:
    query = valid_query(rng)
    choice = rng.randrange(10)
    if choice == 0:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 1400)))
    if choice == 1:
        data = bytearray(m.encode(query))
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] = rng.getrandbits(8)
        return bytes(data)
    if choice == 2:
        data = m.encode(query)
        return data[:rng.randrange(len(data))]
    if choice == 3:
        query[rng.choice(list(query))] = rng.choice(VALUES)
    elif choice == 4:
        del query[rng.choice(list(query))]
    elif choice == 5:
        query["padding"] = "p" * rng.randrange(600, 1200)
    elif choice == 6:
        query["space"] = rng.choice(["other.example.com", SPACE.upper(), SPACE + " "])
    elif choice == 7:
        query.pop("message_type")
        query["method"] = rng.choice(["machines", "factories", "machinetypes", "shell", 7])
    elif choice == 8:
        return json.dumps(rng.choice(VALUES)).encode()
    return json.dumps(query).encode()


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@pytest.fixture
def factory(tmp_path):
    port = free_udp_port()
    f = SpaceFactory(tmp_path, NAME, "127.0.0.1", port, [NAME], Clock(time.time()), slots=4)
    f.start()
    f.factory.run_cycle()
    yield f
    f.stop()


def wait_processed(responder, target: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while responder.received < target and time.monotonic() < deadline:
        time.sleep(0.001)


def test_100000_hostile_datagrams_then_correct_answers(factory):
    rng = random.Random(20261201)
    responder = factory.responder
    target = ("127.0.0.1", factory.port)
    began, rss_before = time.monotonic(), None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        for i in range(COUNT):
            data = mutate(rng)
            s.sendto(data[:65000], target)
            if i % 100 == 99:        # keep within the socket buffer: every datagram is read
                wait_processed(responder, i + 1 - 10)
                try:
                    while True:
                        s.recv(65536)
                except BlockingIOError:
                    pass
            if i == COUNT // 10:
                rss_before = rss_kb()
    took = time.monotonic() - began
    wait_processed(responder, COUNT - 200)
    assert responder.received >= COUNT * 0.98, responder.received
    assert responder.dropped > COUNT * 0.5
    assert responder.thread.is_alive()
    grown = rss_kb() - rss_before
    assert grown < 20_000, f"RSS grew by {grown} kB over 90,000 datagrams"
    result = client.query(m.MACHINES, SPACE, [NAME], 3.0, port=factory.port,
                          resolver=lambda n, p: ("127.0.0.1", p))
    assert len(result.replies[NAME]) == 4
    assert {r["state"] for r in result.replies[NAME].values()} == {"Running"}
    print(f"{COUNT} datagrams in {took:.1f}s; {responder.dropped} dropped, "
          f"{responder.answered} answered, RSS +{grown} kB")
