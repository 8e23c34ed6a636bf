# SPDX-License-Identifier: BSD-2-Clause
"""The VacQuery responder: a thread in vacd answering other factories and `vac`.

It binds vacquery_address:vacquery_port (UDP; with no address, [::] for IPv6 and IPv4
alike, see bind_udp), touches `responder-heartbeat` about once a
second, and answers each query from the state directory and the configuration vacd already
holds (cached pipes only: it never fetches and never calls a backend). Reply bodies are kept
for CACHE_SECONDS so a burst of queries reads the disk once. Anything that is not a query of
our space is dropped and counted, with at most one log line per LOG_INTERVAL; replies to one
sender are limited to REPLY_RATE per second. No error stops the thread but stop().
"""
from __future__ import annotations

import logging
import os
import select
import socket
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Tuple

from vac import __version__
from vac.config.model import Config
from vac.machine import stamped
from vac.space import client
from vac.space import messages as m
from vac.space import replies

log = logging.getLogger(__name__)

CACHE_SECONDS = 1.0
LOG_INTERVAL = 10.0
HEARTBEAT_INTERVAL = 1.0
BIND_RETRY_SECONDS = 5.0
REPLY_RATE = 50000.0          # replies per second to one sender (and the burst)
SENDERS_KEPT = 4096
BUFFER_BYTES = 16 * 1024 * 1024
PROGRAM = "vacd-responder"


class _Budget:
    """A token bucket of replies per sender address, for a bounded number of senders."""

    def __init__(self, rate: float = REPLY_RATE, kept: int = SENDERS_KEPT):
        self.rate, self.kept = rate, kept
        self.buckets: OrderedDict[str, Tuple[float, float]] = OrderedDict()

    def take(self, sender: str, count: int, now: float) -> bool:
        tokens, then = self.buckets.pop(sender, (self.rate, now))
        tokens = min(self.rate, tokens + (now - then) * self.rate)
        ok = tokens >= count
        self.buckets[sender] = (tokens - count if ok else tokens, now)
        while len(self.buckets) > self.kept:
            self.buckets.popitem(last=False)
        return ok


class Responder:
    """Answers VacQuery datagrams until stop(); get_config gives vacd's current Config."""

    def __init__(self, get_config: Callable[[], Optional[Config]],
                 address: Optional[str] = None, port: Optional[int] = None,
                 clock: Callable[[], float] = time.time):
        self.get_config = get_config
        self.address, self.port = address, port
        self.clock = clock
        self.sock: Optional[socket.socket] = None
        self.bound_port: Optional[int] = None
        self.stopping = threading.Event()
        self.bound = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.dropped = 0
        self.answered = 0
        self.received = 0
        self._last_log = 0.0
        self._last_beat = -HEARTBEAT_INTERVAL
        self._cache: Dict[Tuple[str, int], Tuple[float, List[Dict[str, Any]]]] = {}
        self._budget = _Budget()

    # Lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name=PROGRAM, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(timeout)
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the responder never dies
                self._drop("internal error", exc_info=True)
                self.stopping.wait(0.1)

    # One step: heartbeat, bind, wait for a datagram, answer ---------------------------

    def _step(self) -> None:
        config = self.get_config()
        if config is None:
            self.stopping.wait(1.0)
            return
        self._heartbeat(config)
        if self.sock is None and not self._bind(config):
            self.stopping.wait(BIND_RETRY_SECONDS)
            return
        ready, _, _ = select.select([self.sock], [], [], 0.25)
        if not ready:
            return
        for _ in range(256):   # drain a burst before the next heartbeat check
            try:
                data, sender = self.sock.recvfrom(m.QUERY_LIMIT + 1)
            except (BlockingIOError, InterruptedError):
                return
            self.handle(config, data, sender)

    def _heartbeat(self, config: Config) -> None:
        tick = time.monotonic()
        if tick - self._last_beat >= HEARTBEAT_INTERVAL:
            self._last_beat = tick
            try:   # its time, mtime and ctime (which the original reads) name one second
                stamped.write(os.path.join(config.settings.state_dir, "responder-heartbeat"),
                              str, stamped.now_for(self.clock))
            except OSError as e:   # no state directory yet: the factory makes it
                self._drop(f"responder-heartbeat not written: {e}")

    def _bind(self, config: Config) -> bool:
        address = config.settings.vacquery_address if self.address is None else self.address
        port = config.settings.vacquery_port if self.port is None else self.port
        try:
            sock = bind_udp(address, port)
        except OSError as e:
            self._drop(f"cannot bind UDP {shown(address, port)}: {e}")
            return False
        sock.setblocking(False)
        self.sock, self.bound_port = sock, sock.getsockname()[1]
        log.info("VacQuery responder on UDP %s", shown(address, self.bound_port))
        self.bound.set()
        return True

    def handle(self, config: Config, data: bytes, sender: Tuple) -> int:
        """Answer one datagram; return how many replies were sent (0: dropped)."""
        self.received += 1
        try:
            kind, cookie = m.decode_query(data, config.settings.vac_space)
        except m.MessageError as e:
            self._drop(f"from {sender[0]}: {e}")
            return 0
        now, tick = self.clock(), time.monotonic()
        bodies = self._bodies(config, kind, now, tick)
        if not self._budget.take(sender[0], max(1, len(bodies)), tick):
            self._drop(f"from {sender[0]}: over {REPLY_RATE:.0f} replies per second")
            return 0
        s = config.settings
        header = m.reply_header(kind, cookie, s.vac_space, s.factory_name, s.site,
                                m.version_string(__version__, PROGRAM), int(now))
        count_field = m.COUNT_FIELD.get(kind)
        sent = 0
        for body in bodies:
            reply = dict(header, **body)
            if count_field:
                reply[count_field] = len(bodies)
            try:
                self.sock.sendto(m.encode(reply), sender)
                sent += 1
            except (OSError, m.MessageError) as e:
                self._drop(f"reply to {sender[0]} not sent: {e}")
        self.answered += 1
        return sent

    def _bodies(self, config: Config, kind: str, now: float,
                tick: float) -> List[Dict[str, Any]]:
        """The reply bodies, read from disk at most once per CACHE_SECONDS (monotonic)."""
        key = (kind, id(config))
        cached = self._cache.get(key)
        if cached is not None and 0 <= tick - cached[0] < CACHE_SECONDS:
            return cached[1]
        if kind == m.MACHINES:
            bodies = replies.machine_statuses(config)
        elif kind == m.MACHINETYPES:
            bodies = replies.machinetype_statuses(config, now)
        else:
            bodies = [replies.factory_status(config, now)]
        self._cache = {k: v for k, v in self._cache.items() if k[1] == id(config)}
        self._cache[key] = (tick, bodies)
        return bodies

    def _drop(self, why: str, exc_info: bool = False) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL:
            log.warning("VacQuery: %s (%d dropped so far)", why[:200], self.dropped,
                        exc_info=exc_info)
            self._last_log = now


def shown(address: str, port: int) -> str:
    """address:port as an administrator reads it: [v6]:port, and what the default binds."""
    if not address:
        return f"[::]:{port} (IPv6 and IPv4)"
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def bind_udp(address: str, port: int) -> socket.socket:
    """A UDP socket bound for the responder: dual-stack [::] (IPv6 and IPv4) when no address
    is set, IPv4 alone where the host has no IPv6; 0.0.0.0 for IPv4 alone, :: for IPv6
    alone, else the one address given (a name: its first address)."""
    if not address:
        try:
            return _bound(socket.AF_INET6, "::", port, v6only=False)
        except OSError:   # no IPv6 on this host
            return _bound(socket.AF_INET, "", port)
    infos = socket.getaddrinfo(address, port, socket.AF_UNSPEC, socket.SOCK_DGRAM,
                               0, socket.AI_PASSIVE)
    family, _, _, _, sockaddr = infos[0]
    return _bound(family, sockaddr[0], port, v6only=True)


def _bound(family: int, host: str, port: int, v6only: bool = True) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if v6only else 0)
        for forced, option in ((client.SO_RCVBUFFORCE, socket.SO_RCVBUF),
                               (client.SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:   # past net.core.rmem_max/wmem_max as root, as the original raised them
                sock.setsockopt(socket.SOL_SOCKET, forced or option, BUFFER_BYTES)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def config_source(get: Callable[[], Optional[Config]],
                     fallback: Callable[[], Config]) -> Callable[[], Optional[Config]]:
    """vacd's config for the responder: the factory's, or one loaded from the cache once."""
    loaded: List[Config] = []

    def current() -> Optional[Config]:
        config = get()
        if config is not None:
            return config
        if not loaded:
            try:
                loaded.append(fallback())
            except Exception as e:  # noqa: BLE001 - the responder waits for a good config
                log.warning("responder: no configuration yet: %s", e)
                return None
        return loaded[0]
    return current
