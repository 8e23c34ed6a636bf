# SPDX-License-Identifier: BSD-2-Clause
"""Fuzz: random and mutated HTTP requests to the VM metadata service over a real
socket: methods, paths with traversal (.., %2e%2e, NUL), very long lines, huge, chunked and
short bodies, wrong Content-Length, cut-off (slowloris) requests. The service never dies and
never fails a request with a traceback, writes nothing outside the machine's joboutputs,
still answers well-formed requests correctly afterwards, and its memory stays bounded.
"""
from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import traceback
import unicodedata

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from metadatamachines import FACTORY, make_machine

from vac.backends.libvirt import metadata
from vac.machine import joboutputs
from vac.paths import Paths

UUID = "11111111-2222-4333-8444-555555555503"
MAX_PUT = 4096
# A deadline that only ends a wait that would never end (VAC_TEST_DEADLINE seconds, 300).
GENEROUS = float(os.environ.get("VAC_TEST_DEADLINE", "300"))
FUZZ = settings(max_examples=600, deadline=None, database=None, derandomize=True,
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
           "put", "GET\x00", "G ET", "", "X" * 300]
SEGMENTS = ["latest", "2009-04-04", "1.0", "openstack", "meta-data", "meta_data.json",
            "meta-data.json", "user-data", "user_data", "instance-id", "public-keys", "0",
            "openssh-key", "machinefeatures", "jobfeatures", "total_cpu", "job_id",
            "joboutputs", "shutdown_message", "heartbeat", "..", ".", "%2e%2e", "%2E%2E",
            "..%2f..", "%2e%2e%2fetc", "etc", "passwd", "shadow", "\x00", "a\x00b", "",
            "?x=1", "#frag", "~root", "a" * 200, "..\\..", "\u00e9", "%00", ".hidden",
            "joboutputs/../../../etc/x", "state", "slots"]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "", "HTTP/0.9", "HTTP/2.0", "HTTP/1.1 extra", "HTTPS/1.1",
            "HTTP/1.10", "HTTP/01.1"]
LENGTHS = ["", "0", "5", "4096", "4097", "999999999999", "-1", "+5", " 5 ", "5, 5", "0x10",
           "\u00b2", "\u0665", "9" * 5000, "1e3", "abc"]
_header = st.one_of(
    st.sampled_from([("Content-Length", v) for v in LENGTHS]),
    st.sampled_from([("Transfer-Encoding", "chunked"), ("Expect", "100-continue"),
                     ("Connection", "keep-alive"), ("Connection", "close"),
                     ("Host", "169.254.169.254"), ("X-Forwarded-For", "169.254.169.5"),
                     ("X-Long", "v" * 70000), ("", "empty name"), ("Bad Header", "x"),
                     ("Content-Type", "\x00\xff")]),
    st.tuples(st.text(max_size=10), st.text(max_size=20)))


@st.composite
def requests(draw) -> bytes:
    method = draw(st.one_of(st.sampled_from(METHODS), st.text(max_size=8)))
    prefix = draw(st.sampled_from(["/", "//", "", "http://169.254.169.254/", "*", "/./"]))
    path = prefix + "/".join(draw(st.lists(st.one_of(st.sampled_from(SEGMENTS),
                                                     st.text(max_size=8)), max_size=6)))
    if draw(st.integers(0, 20)) == 0:
        path += "/" + "x" * draw(st.sampled_from([1100, 70000]))
    version = draw(st.sampled_from(VERSIONS))
    headers = draw(st.lists(_header, max_size=5))
    if draw(st.integers(0, 30)) == 0:
        headers += [("X-Many", "1")] * 120
    body = draw(st.one_of(st.binary(max_size=64), st.sampled_from(
        [b"", b"300 hostile\n", b"5\r\nhello\r\n0\r\n\r\n", b"x" * 5000, b"\x00" * 100])))
    line = f"{method} {path} {version}".rstrip(" ")
    head = "\r\n".join([line] + [f"{k}: {v}" for k, v in headers]) + "\r\n\r\n"
    data = head.encode("utf-8", errors="surrogatepass") + body
    if draw(st.integers(0, 5)) == 0:        # cut short: a slowloris that gives up
        data = data[:draw(st.integers(0, len(data)))]
    return data


class Harness:
    """The service on 127.0.0.1:0 with VMs 3 and 5, the client seen as 169.254.169.3."""

    def __init__(self, root: str):
        self.root = root
        self.paths = Paths(os.path.join(root, "state"))
        self.paths.ensure()
        self.vms = {3: make_machine(self.paths, 3, UUID),
                    5: make_machine(self.paths, 5, "11111111-2222-4333-8444-555555555505")}
        with open(os.path.join(root, "canary"), "w") as f:
            f.write("outside the state directory\n")
        self.errors = []
        service = metadata.MetadataService(self.paths, FACTORY,
                                           client_address=lambda peer: "169.254.169.3",
                                           max_put_bytes=MAX_PUT)
        self.server = metadata.serve(service, "127.0.0.1", 0)
        self.server.handle_error = self._record      # a handler traceback would land here
        self.port = self.server.server_address[1]
        self.joboutputs = os.path.realpath(self.vms[3].file("joboutputs"))
        self.threads = threading.active_count()      # this and other modules' threads, and ours

    def _record(self, request, client_address) -> None:
        self.errors.append(traceback.format_exc())

    def send(self, data: bytes, wait: float = 2.0) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=wait) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass                     # the server may close first (e.g. refused headers)
            chunks, total = [], 0
            try:
                while total < 1024 * 1024:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    total += len(chunk)
            except (socket.timeout, ConnectionResetError):
                pass
        return b"".join(chunks)

    def get(self, path: str) -> bytes:
        return self.send(f"GET {path} HTTP/1.0\r\n\r\n".encode())

    def snapshot(self) -> dict:
        """Every path under the root but the VM's joboutputs, with size and mtime."""
        found = {}
        for top, dirs, files in os.walk(self.root):
            for name in dirs + files:
                path = os.path.join(top, name)
                if os.path.realpath(path).startswith(self.joboutputs):
                    continue
                st_ = os.lstat(path)
                found[path] = (st_.st_mode, st_.st_size, st_.st_mtime_ns)
        return found

    def check_joboutputs(self) -> None:
        names = os.listdir(self.joboutputs)
        assert len(names) <= joboutputs.MAX_FILES + 1      # + a short shutdown_message
        for name in names:
            assert joboutputs.valid_name(name), name
            st_ = os.lstat(os.path.join(self.joboutputs, name))
            assert st_.st_size <= MAX_PUT and (st_.st_mode & 0o170000) == 0o100000

    def check_alive(self) -> None:
        reply = self.get("/latest/meta-data/instance-id")
        assert reply.startswith(b"HTTP/1.") and b" 200 " in reply.split(b"\r\n")[0], reply[:200]
        assert reply.endswith(UUID.encode())
        put = self.send(b"PUT /joboutputs/probe HTTP/1.1\r\nContent-Length: 7\r\n\r\n200 ok\n")
        assert b" 201 " in put.split(b"\r\n")[0], put[:200]
        with open(os.path.join(self.joboutputs, "probe"), "rb") as f:
            assert f.read() == b"200 ok\n"
        assert not self.errors, self.errors[-1]


@pytest.fixture(scope="module")
def harness():
    with tempfile.TemporaryDirectory(prefix="vac-fuzz-metadata-") as root:
        h = Harness(root)
        yield h
        h.server.shutdown()
        h.server.server_close()


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@FUZZ
@given(data=requests())
@example(data=b"PUT /joboutputs/x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n12")   # int() fails
@example(data=b"PUT /joboutputs/x HTTP/1.1\r\nContent-Length: \xc2\xb2\r\n\r\n12")
@example(data=b"PUT /joboutputs/x HTTP/1.1\r\nContent-Length: " + b"9" * 5000 + b"\r\n\r\n")
@example(data=b"PUT /joboutputs/%2e%2e HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
@example(data=b"PUT /joboutputs/../../canary HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi")
@example(data=b"PUT /joboutputs/x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n")
@example(data=b"PUT /joboutputs/x HTTP/1.1\r\nContent-Length: 4096\r\n\r\nshort")
@example(data=b"GET /latest/user-data\x00/../../canary HTTP/1.1\r\n\r\n")
def test_hostile_requests_leave_the_service_answering_and_the_disk_untouched(harness, data):
    harness.errors.clear()
    before = harness.snapshot()
    harness.send(data)
    assert harness.snapshot() == before
    harness.check_joboutputs()
    harness.check_alive()


def test_memory_and_threads_stay_bounded_after_the_fuzz(harness):
    """Run after the fuzz (same module harness): 200 more hostile PUTs of the largest size."""
    rss = _rss_kb()
    for i in range(200):
        harness.send(b"PUT /joboutputs/big%d HTTP/1.1\r\nContent-Length: %d\r\n\r\n"
                     % (i % 80, MAX_PUT) + b"x" * MAX_PUT)
        harness.send(b"PUT /joboutputs/huge HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"
                     + b"y" * 65536)
    harness.check_joboutputs()
    harness.check_alive()
    assert _rss_kb() - rss < 32 * 1024
    deadline = time.monotonic() + 5
    while threading.active_count() > harness.threads and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= harness.threads     # no handler thread left behind


def _connections_from(server, peer: str) -> int:
    """How many connections from `peer` the server counts now (its per-peer bound)."""
    with server._peers_lock:
        return server._peers.get(peer, 0)


def _until_no_connections_from(server, peer: str) -> None:
    """Wait (generous deadline) until the server counts no connection from `peer`."""
    deadline = time.monotonic() + GENEROUS
    while _connections_from(server, peer) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _connections_from(server, peer) == 0, "handler threads of earlier requests linger"


def test_slow_partial_requests_do_not_block_other_requests(harness):
    """Blocked, a request would wait for a slow one's handler timeout; the bound is what an
    answer takes on this machine right now (measured just before), well below that timeout.

    The server counts a connection against its peer until the connection's handler thread
    ends, which is just after the client has read the answer: the GET of check_alive can still
    be counted when its PUT arrives. So the test first waits until the server counts no
    connection from 127.0.0.1 (earlier tests' handlers have ended), then holds
    MAX_CONNECTIONS_PER_PEER - 2 slow requests: check_alive's PUT still finds room with its GET's
    thread lingering, and a server that made it wait for the slow ones would still be caught."""
    handler_timeout = harness.server.RequestHandlerClass.timeout
    _until_no_connections_from(harness.server, "127.0.0.1")
    started = time.monotonic()
    harness.check_alive()
    bound = max(2.0, 5 * (time.monotonic() - started))
    assert bound < handler_timeout / 2, f"an answer takes {bound / 5:.1f} s here: too slow " \
                                        f"to tell waiting from not waiting"
    _until_no_connections_from(harness.server, "127.0.0.1")
    held = []
    try:
        for _ in range(metadata.MAX_CONNECTIONS_PER_PEER - 2):
            s = socket.create_connection(("127.0.0.1", harness.port), timeout=5)
            s.sendall(b"PUT /joboutputs/slow HTTP/1.1\r\nContent-Length: 100\r\n\r\npart")
            held.append(s)
        started = time.monotonic()
        harness.check_alive()
        assert time.monotonic() - started < bound
    finally:
        for s in held:
            s.close()
    assert not os.path.exists(os.path.join(harness.joboutputs, "slow"))


def _still_open(socks) -> list:
    """The sockets the server has not closed (a closed one reads EOF at once)."""
    found = []
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1):
                found.append(s)
        except BlockingIOError:
            found.append(s)
        except OSError:
            pass
        s.settimeout(5)
    return found


def _ask_as(address: str, port: int) -> int:
    """The status of a GET of instance-id sent from this loopback address (0: no answer)."""
    with socket.socket() as s:
        s.settimeout(5)
        s.bind((address, 0))
        s.connect(("127.0.0.1", port))
        try:
            s.sendall(b"GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n")
            reply = s.recv(65536)
        except OSError:             # refused: closed or reset before an answer
            reply = b""
    return int(reply.split(b" ")[1]) if reply.startswith(b"HTTP/") else 0


def test_one_slow_vm_cannot_take_every_connection_from_the_others(paths):
    """A VM (here 127.0.0.2) holding MAX_CONNECTIONS half-sent requests open (each byte resets
    the handler's timeout, so it can keep them forever) must leave room for other VMs."""
    make_machine(paths, 3, UUID)
    service = metadata.MetadataService(
        paths, FACTORY, client_address=lambda peer: "169.254.169." + peer.rpartition(".")[2])
    server = metadata.serve(service, "127.0.0.1", 0)
    port = server.server_address[1]
    held = []
    try:
        for _ in range(metadata.MAX_CONNECTIONS + 4):
            s = socket.socket()
            s.settimeout(5)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            s.sendall(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nX-Slow: ")
            held.append(s)
        time.sleep(0.5)                  # the server has accepted all it is going to
        other = socket.socket()
        other.settimeout(5)
        other.bind(("127.0.0.3", 0))
        other.connect(("127.0.0.1", port))
        with other:
            other.sendall(b"GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n")
            reply = b""
            while not reply.endswith(UUID.encode()):
                chunk = other.recv(65536)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(UUID.encode()), reply
        # The slow VM itself got only its share, and gets connections again once it lets go.
        assert len(_still_open(held)) == metadata.MAX_CONNECTIONS_PER_PEER
        for s in held:
            s.close()
        deadline = time.monotonic() + 5
        while _ask_as("127.0.0.2", port) == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _ask_as("127.0.0.2", port) == 404       # answered (slot 2 has no machine)
    finally:
        for s in held:
            s.close()
        server.shutdown()
        server.server_close()


def test_a_half_sent_request_is_dropped_after_the_handler_timeout(paths):
    """A slowloris that stops sending is closed by the server (the handler's timeout, 10 s in
    service; 1 s here), its thread ends and its connection place is free again."""
    vm = make_machine(paths, 3, UUID)
    service = metadata.MetadataService(paths, FACTORY, client_address=lambda p: "169.254.169.3")
    server = metadata.serve(service, "127.0.0.1", 0)
    assert 0 < server.RequestHandlerClass.timeout <= 30
    server.RequestHandlerClass.timeout = 1
    threads = threading.active_count()
    try:
        socks = []
        for partial in (b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x",
                        b"PUT /joboutputs/slow HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc",
                        b"GE"):
            s = socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5)
            s.sendall(partial)
            socks.append(s)
        started = time.monotonic()
        for s in socks:
            with s:
                while s.recv(65536):         # whatever the server says, then its close
                    pass
        assert time.monotonic() - started < 4
        deadline = time.monotonic() + 3
        while threading.active_count() > threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() <= threads
        assert server._peers == {}
        assert not os.path.lexists(vm.file("joboutputs/slow"))      # a short body is no file
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("request_line", [
    b"GET /latest/\x1b]0;owned\x07\x1b[2J HTTP/1.1",
    b"PUT /joboutputs/\x1b[31mred\x9b HTTP/1.1",
    b"GET\x1b[2J / HTTP/1.1",
    b"GET / HTTP/1.1\x1b[2J"])
def test_a_guest_cannot_put_terminal_escapes_into_the_log(harness, caplog, request_line):
    """What a VM sends is logged with its control characters escaped (Python's own
    log_message escapes them since 3.11.1; the service's log_message replaces it)."""
    with caplog.at_level(logging.DEBUG, logger="vac.backends.libvirt.metadata"):
        harness.send(request_line + b"\r\nContent-Length: 1\r\n\r\nx")
    messages = [r.getMessage() for r in caplog.records]
    assert messages
    for message in messages:
        assert not [c for c in message if unicodedata.category(c) == "Cc"], message
