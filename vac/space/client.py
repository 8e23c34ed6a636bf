# SPDX-License-Identifier: BSD-2-Clause
"""The VacQuery client: ask factories, re-ask the short ones, collect the replies.

One call sends a query of one kind to every named factory, each with the cookie
sha256(salt + factory) for a fresh salt, and receives until every factory has sent all its
replies (`num_machines` / `num_machinetypes` say how many; a factory query wants one).

Why a re-ask alone did not recover lost replies: a factory answers a query with all its
replies (the protocol cannot ask for one machine), and the original asked every factory at
once, so a large space's replies arrive as one burst, interleaved, and a burst larger than
the client's receive buffer loses datagrams from nearly every factory at once. Re-asking
every short factory at once then repeated nearly the same burst, which overflowed the buffer
again. So the queries are paced (vac.space.pacing): only as many factories are asked at a
time as their replies fit in half the receive buffer the kernel gave, the next ones as
replies come in; a factory still short after a quiet spell of `timeout / ROUNDS` seconds is
asked again (only the short ones, up to ROUNDS asks each, trying its next address each
time), and the whole call never takes longer than `timeout`. `Result.short()` names what is
still missing, `Result.refused` the replies that carried our cookie but were refused.

Names resolve to every address they have (AAAA and A); a socket per address family is opened
as needed. A factory asked by address (or by an alias) is answered under the name it was
asked by: its reply names the factory's own name, so it is matched by the sender's address
and the cookie of the name asked.
"""
from __future__ import annotations

import ipaddress
import select
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from vac import __version__
from vac.space import messages as m
from vac.space import pacing

ROUNDS = 6          # asks of one factory at most
BUFFER_BYTES = 16 * 1024 * 1024
REFUSED_KEPT = 20   # refused replies kept to report (all are counted)
Address = Tuple[str, int]
# Python's socket module does not name these: Linux's values (asm-generic/socket.h). Without
# them the buffer stays at net.core.rmem_max, whatever root may set.
LINUX = sys.platform.startswith("linux")
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32 if LINUX else None)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if LINUX else None)
Resolved = Union[None, Address, Sequence[Address]]


def canonical(name: str, own_fqdn: str) -> str:
    """`.` is this host; an address stays whole; a name without a dot gets this host's
    domain; else as it is."""
    name = name.strip().lower().rstrip(".") if name.strip() != "." else "."
    if name == ".":
        return own_fqdn.lower()
    literal = _literal(name)
    if literal is not None:
        return literal
    if "." not in name:
        domain = own_fqdn.partition(".")[2]
        return f"{name}.{domain}" if domain else name
    return name


def _literal(name: str) -> Optional[str]:
    """An IPv4 or IPv6 address (brackets allowed) in its usual form, else None."""
    bare = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return None


def canonical_list(names: Sequence[str], own_fqdn: str) -> List[str]:
    """Canonical names, each once, in their first order."""
    seen: Dict[str, None] = {}
    for name in names:
        if name.strip():
            seen.setdefault(canonical(name, own_fqdn), None)
    return list(seen)


@dataclass
class Result:
    """Replies by factory (machine, machinetype or "" -> reply) and how many were expected."""

    kind: str
    factories: List[str]
    replies: Dict[str, Dict[str, dict]] = field(default_factory=dict)
    expected: Dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    unresolved: List[str] = field(default_factory=list)
    timeout: float = 0.0
    asks: Dict[str, int] = field(default_factory=dict)
    refused: List[str] = field(default_factory=list)
    refused_count: int = 0
    datagrams: int = 0      # reply datagrams received (duplicates and refused ones included)
    queries: int = 0        # queries sent

    def complete(self, factory: str) -> bool:
        got = self.replies.get(factory, {})
        return bool(got) and len(got) >= self.expected.get(factory, 1)

    def silent(self) -> List[str]:
        """The factories that sent nothing (the unresolved ones among them)."""
        return [f for f in self.factories if not self.replies.get(f)]

    def no_reply(self) -> List[str]:
        """The factories that were asked and did not answer within the timeout."""
        return [f for f in self.silent() if f not in self.unresolved]

    def short(self) -> List[Tuple[str, int, int]]:
        """(factory, replies received, replies announced) for each factory that answered
        but not with all it announced."""
        return [(f, len(self.replies[f]), self.expected.get(f, 1)) for f in self.factories
                if self.replies.get(f) and not self.complete(f)]

    def all_replies(self) -> List[dict]:
        return [r for f in self.factories for _, r in
                sorted(self.replies.get(f, {}).items())]


def _key(kind: str, reply: dict) -> str:
    if kind == m.MACHINES:
        return reply["machine"]
    if kind == m.MACHINETYPES:
        return reply["machinetype"]
    return ""


def resolve(name: str, port: int) -> List[Address]:
    """Every address of a factory name, IPv6 and IPv4 (getaddrinfo's order), or []."""
    try:
        infos = socket.getaddrinfo(name, port, socket.AF_UNSPEC, socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return []
    found: List[Address] = []
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6) and \
                (sockaddr[0], port) not in found:
            found.append((sockaddr[0], port))
    return found


def _addresses(resolved: Resolved) -> List[Address]:
    """A resolver's answer as a list: one address or several."""
    if not resolved:
        return []
    if isinstance(resolved, tuple) and isinstance(resolved[0], str):
        return [resolved]   # type: ignore[list-item]
    return list(resolved)   # type: ignore[arg-type]


def query(kind: str, space: str, factories: Sequence[str], timeout: float,
          port: int = m.DEFAULT_PORT, program: str = "vac",
          addresses: Optional[Mapping[str, Resolved]] = None,
          resolver: Optional[Callable[[str, int], Resolved]] = None) -> Result:
    """Ask every factory (canonical names) and return what came back within `timeout`."""
    result = Result(kind=kind, factories=list(factories), timeout=max(0.0, timeout))
    salt = m.new_salt()
    version = m.version_string(__version__, program) if kind != m.FACTORY else \
        m.version_string(__version__)
    targets: Dict[str, List[Address]] = {}
    for name in result.factories:
        found = _addresses((addresses or {}).get(name)) or \
            _addresses((resolver or resolve)(name, port))
        if found:
            targets[name] = found
        else:
            result.unresolved.append(name)
    if targets:
        with _Sockets() as sockets:
            _Exchange(result, space, salt, version, targets, sockets).run()
    result.rounds = max(result.asks.values(), default=0)
    return result


class _Sockets:
    """One UDP socket per address family, opened when first needed, with a big buffer."""

    def __init__(self) -> None:
        self.by_family: Dict[int, socket.socket] = {}

    def __enter__(self) -> _Sockets:
        return self

    def __exit__(self, *exc) -> None:
        for sock in self.by_family.values():
            sock.close()

    def for_address(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.by_family.get(family)
        if sock is None:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            big_buffer(sock)
            self.by_family[family] = sock
        return sock

    def buffer(self) -> int:
        """The smallest receive buffer the kernel gave (bytes it accounts, overhead too)."""
        return min((s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                    for s in self.by_family.values()), default=BUFFER_BYTES)


class _Exchange:
    """One call's queries and replies, paced against the receive buffer."""

    def __init__(self, result: Result, space: str, salt: str, version: str,
                 targets: Mapping[str, List[Address]], sockets: _Sockets):
        self.result, self.space, self.salt, self.version = result, space, salt, version
        self.targets, self.sockets = targets, sockets
        self.by_host: Dict[str, List[str]] = {}
        for name, found in targets.items():
            for host, _ in found:
                self.by_host.setdefault(_host(host), []).append(name)
        self.deadline = time.monotonic() + result.timeout
        self.pacer = pacing.Pacer(list(targets), result.kind, ROUNDS,
                                  quiet=max(0.01, result.timeout / ROUNDS))

    def run(self) -> None:
        for family_host in {_host(a[0]) for found in self.targets.values() for a in found}:
            self.sockets.for_address(family_host)   # open every family first: the budget
        self.pacer.budget = pacing.budget(self.sockets.buffer())
        while True:
            now = time.monotonic()
            for name in self.pacer.due(now, self.result):
                self._ask(name)
            if self.pacer.finished() or now >= self.deadline:
                return
            wait = min(self.pacer.next_check(now), self.deadline) - now
            self._receive(max(0.0, wait))

    def _ask(self, name: str) -> None:
        asks = self.result.asks.get(name, 0)
        found = self.targets[name]
        address = found[asks % len(found)]    # the next address of the name each time
        self.result.asks[name] = asks + 1
        data = m.encode(m.make_query(self.result.kind, self.space,
                                     m.cookie_for(self.salt, name), self.version))
        try:
            self.sockets.for_address(address[0]).sendto(data, address)
            self.result.queries += 1
        except OSError:
            pass

    def _receive(self, wait: float) -> None:
        socks = list(self.sockets.by_family.values())
        ready = select.select(socks, [], [], wait)[0] if wait > 0 else socks
        for sock in ready:
            for _ in range(4096):
                try:
                    data, sender = sock.recvfrom(m.REPLY_LIMIT + 1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:   # e.g. an ICMP error left on the socket
                    break
                self._take(data, _host(sender[0]))

    def _take(self, data: bytes, sender: str) -> None:
        result = self.result
        result.datagrams += 1
        found = self._decode(data, sender)
        if found is None:
            return
        factory, reply = found
        got = result.replies.setdefault(factory, {})
        result.expected[factory] = reply.get(m.COUNT_FIELD.get(result.kind, ""), 1)
        if len(got) < m.COUNT_LIMIT:
            got[_key(result.kind, reply)] = reply
        self.pacer.heard(factory, time.monotonic(), result)

    def _decode(self, data: bytes, sender: str) -> Optional[Tuple[str, dict]]:
        """(the name asked, the reply) for a reply to one of our targets, else None: by the
        name the reply gives, else by the sender's address and the cookie of the name asked
        there. A reply with our cookie that is refused is kept in result.refused."""
        try:
            reply = m.decode_reply(data, self.space, self.result.kind, self.salt)
            if reply["factory"] in self.targets:
                return reply["factory"], reply
        except m.MessageError as e:
            if e.ours:
                return self._refuse(sender, e)
        for name in self.by_host.get(sender, ()):
            try:
                return name, m.decode_reply(data, self.space, self.result.kind, self.salt,
                                            cookie_name=name)
            except m.MessageError as e:
                if e.ours:
                    return self._refuse(sender, e)
        return None

    def _refuse(self, sender: str, error: m.MessageError) -> None:
        self.result.refused_count += 1
        if len(self.result.refused) < REFUSED_KEPT:
            self.result.refused.append(f"from {sender}: {error}")
        return None


def _host(host: str) -> str:
    """An address as the targets spell it: an IPv4-mapped IPv6 sender as its IPv4."""
    if host.startswith("::ffff:") and "." in host:
        return host[7:]
    return host


def big_buffer(sock: socket.socket) -> None:
    """Room for a burst of replies (a factory sends one datagram per slot): 16 MiB, past
    net.core.rmem_max where the caller may (root), else as much as the kernel allows."""
    for option in (SO_RCVBUFFORCE, socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
            return
        except OSError:
            continue
