# SPDX-License-Identifier: BSD-2-Clause
"""The client's pacing: queries bounded by the receive buffer, only the short
factories asked again, and the loss test: a burst far larger than the receive buffer, which
loses replies when every factory is asked at once, loses nothing through the paced client."""
from __future__ import annotations

import selectors
import socket
import threading
import time

import pytest

from vac.space import client, pacing
from vac.space import messages as m

SPACE = "loss.example.com"


def test_the_pacer_keeps_the_replies_in_flight_within_the_budget():
    result = client.Result(kind=m.MACHINES, factories=[f"f{i}" for i in range(10)])
    pacer = pacing.Pacer(list(result.factories), m.MACHINES, rounds=3, quiet=1.0,
                         budget_replies=100)
    assert pacer.due(0.0, result) == ["f0"]            # a first guess of 64 replies each
    result.replies["f0"] = {"a": {}}
    result.expected["f0"] = 10
    pacer.heard("f0", 0.1, result)
    # f0 keeps its 64 reserved until it lands; the next ones cost what f0 announced.
    assert pacer.due(0.1, result) == ["f1", "f2", "f3"]
    assert pacer.in_flight() == 94
    result.replies["f0"] = {str(k): {} for k in range(10)}
    pacer.heard("f0", 0.2, result)                     # complete: its reservation freed
    assert pacer.due(0.2, result) == [f"f{i}" for i in range(4, 10)]
    assert pacer.in_flight() <= 100


def test_only_short_factories_are_asked_again_and_given_up_after_the_rounds():
    result = client.Result(kind=m.FACTORY, factories=["a", "b"])
    pacer = pacing.Pacer(["a", "b"], m.FACTORY, rounds=2, quiet=1.0)
    for name in pacer.due(0.0, result):
        result.asks[name] = 1
    result.replies["a"] = {"": {}}
    pacer.heard("a", 0.5, result)
    assert pacer.due(1.5, result) == ["b"]             # a answered; b is asked again
    result.asks["b"] = 2
    assert pacer.due(3.0, result) == []                # b had its two asks: given up
    assert pacer.finished()


def _reply(cookie: str, factory: str, k: int, count: int) -> bytes:
    header = m.reply_header(m.MACHINES, cookie, SPACE, factory, "site", "Vac test", 1)
    body = {"num_machines": count, "machine": f"{factory}-{k:02d}", "state": "Running",
            "uuid": None, "created_time": 1, "started_time": 1, "heartbeat_time": 1,
            "cpu_seconds": 0, "cpu_percentage": 0.0, "hs06": 1.0, "machinetype": "t",
            "shutdown_message": None, "shutdown_time": None, "padding": "x" * 600}
    return m.encode(dict(header, **body))


class Responders:
    """Factories on loopback ports, one thread: each answers a machines query with all its
    replies at once, as a factory does."""

    def __init__(self, count: int, replies: int):
        self.replies, self.selector, self.addresses = replies, selectors.DefaultSelector(), {}
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            name = f"f{i:02d}.{SPACE}"
            self.selector.register(sock, selectors.EVENT_READ, name)
            self.addresses[name] = ("127.0.0.1", sock.getsockname()[1])
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            for key, _ in self.selector.select(0.1):
                try:
                    data, sender = key.fileobj.recvfrom(m.QUERY_LIMIT)
                except BlockingIOError:
                    continue
                _, cookie = m.decode_query(data, SPACE)
                for k in range(self.replies):
                    key.fileobj.sendto(_reply(cookie, key.data, k, self.replies), sender)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()


@pytest.fixture
def responders():
    found = Responders(40, 64)
    yield found
    found.stop()


SMALL = 96 * 1024    # the client's receive buffer here: the burst is ~60 times larger


def test_a_burst_larger_than_the_buffer_loses_nothing_after_the_rounds(responders,
                                                                        monkeypatch):
    names = sorted(responders.addresses)
    # Asked all at once (the original's pattern) into the same buffer, replies are lost.
    salt = m.new_salt()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL)
        for name in names:
            sock.sendto(m.encode(m.make_query(m.MACHINES, SPACE, m.cookie_for(salt, name),
                                              "t")), responders.addresses[name])
        time.sleep(3)
        sock.setblocking(False)
        got = 0
        while True:
            try:
                sock.recv(m.REPLY_LIMIT)
            except BlockingIOError:
                break
            got += 1
    assert got < len(names) * 64 / 2

    monkeypatch.setattr(client, "BUFFER_BYTES", SMALL)
    monkeypatch.setattr(client, "SO_RCVBUFFORCE", None)
    result = client.query(m.MACHINES, SPACE, names, 120.0, addresses=responders.addresses)
    assert result.short() == [] and result.silent() == []
    assert sum(len(r) for r in result.replies.values()) == len(names) * 64
