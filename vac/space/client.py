# SPDX-License-Identifier: BSD-2-Clause
"""The VacQuery client: ask factories, re-ask the silent ones, collect the replies (§9.1).

One call sends a query of one kind to every named factory, each with the cookie
sha256(salt + factory) for a fresh salt, and receives until every factory has sent all its
replies (`num_machines` / `num_machinetypes` say how many; a factory query wants one). A
round ends after `timeout / ROUNDS` seconds of silence and the factories still short of
replies are asked again, up to ROUNDS rounds; the whole call never takes longer than
`timeout`. A factory that cannot be resolved (`unresolved`) or never answers is left out
(silent). A factory asked by address (or by an alias) is answered under the name it was asked
by: its reply names the factory's own name, so it is matched by the sender's address and the
cookie of the name asked.
"""
from __future__ import annotations

import select
import socket
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from vac import __version__
from vac.space import messages as m

ROUNDS = 6
BUFFER_BYTES = 16 * 1024 * 1024
Address = Tuple[str, int]


def canonical(name: str, own_fqdn: str) -> str:
    """`.` is this host; a name without a dot gets this host's domain; else as it is."""
    name = name.strip().lower().rstrip(".") if name.strip() != "." else "."
    if name == ".":
        return own_fqdn.lower()
    if "." not in name:
        domain = own_fqdn.partition(".")[2]
        return f"{name}.{domain}" if domain else name
    return name


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

    def complete(self, factory: str) -> bool:
        got = self.replies.get(factory, {})
        return bool(got) and len(got) >= self.expected.get(factory, 1)

    def silent(self) -> List[str]:
        """The factories that sent nothing (the unresolved ones among them)."""
        return [f for f in self.factories if not self.replies.get(f)]

    def no_reply(self) -> List[str]:
        """The factories that were asked and did not answer within the timeout."""
        return [f for f in self.silent() if f not in self.unresolved]

    def all_replies(self) -> List[dict]:
        return [r for f in self.factories for _, r in
                sorted(self.replies.get(f, {}).items())]


def _key(kind: str, reply: dict) -> str:
    if kind == m.MACHINES:
        return reply["machine"]
    if kind == m.MACHINETYPES:
        return reply["machinetype"]
    return ""


def resolve(name: str, port: int) -> Optional[Address]:
    """The IPv4 address of a factory name, or None."""
    try:
        infos = socket.getaddrinfo(name, port, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    return (infos[0][4][0], port) if infos else None


def query(kind: str, space: str, factories: Sequence[str], timeout: float,
          port: int = m.DEFAULT_PORT, program: str = "vac",
          addresses: Optional[Mapping[str, Address]] = None,
          resolver: Optional[Callable[[str, int], Optional[Address]]] = None) -> Result:
    """Ask every factory (canonical names) and return what came back within `timeout`."""
    result = Result(kind=kind, factories=list(factories), timeout=max(0.0, timeout))
    salt = m.new_salt()
    version = m.version_string(__version__, program) if kind != m.FACTORY else \
        m.version_string(__version__)
    targets: Dict[str, Address] = {}
    for name in result.factories:
        address = (addresses or {}).get(name) or (resolver or resolve)(name, port)
        if address is not None:
            targets[name] = address
        else:
            result.unresolved.append(name)
    deadline = time.monotonic() + max(0.0, timeout)
    silence = max(0.01, timeout / ROUNDS)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        _big_buffer(sock)
        for _ in range(ROUNDS):
            pending = [f for f in targets if not result.complete(f)]
            if not pending or time.monotonic() >= deadline:
                break
            result.rounds += 1
            for name in pending:
                data = m.encode(m.make_query(kind, space, m.cookie_for(salt, name), version))
                try:
                    sock.sendto(data, targets[name])
                except OSError:
                    pass
            _receive(sock, result, space, salt, targets, silence, deadline)
    return result


def _decode(kind: str, data: bytes, sender: Address, space: str, salt: str,
            targets: Mapping[str, Address]) -> Optional[Tuple[str, dict]]:
    """(the name asked, the reply) for a reply to one of our targets, else None: by the name
    the reply gives, else by the sender's address and the cookie of the name asked there."""
    try:
        reply = m.decode_reply(data, space, kind, salt)
        if reply["factory"] in targets:
            return reply["factory"], reply
    except m.MessageError:
        pass
    for name, address in targets.items():
        if address[0] != sender[0]:
            continue
        try:
            return name, m.decode_reply(data, space, kind, salt, cookie_name=name)
        except m.MessageError:
            continue
    return None


def _big_buffer(sock: socket.socket) -> None:
    """Room for a burst of replies (a factory sends one datagram per slot): 16 MiB, past
    net.core.rmem_max where the caller may (root), else as much as the kernel allows."""
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, BUFFER_BYTES)
            return
        except OSError:
            continue


def _receive(sock: socket.socket, result: Result, space: str, salt: str,
             targets: Mapping[str, Address], silence: float, deadline: float) -> None:
    """Take replies until `silence` seconds pass without one, the deadline, or all are in."""
    while True:
        wait = min(silence, deadline - time.monotonic())
        if wait <= 0 or not select.select([sock], [], [], wait)[0]:
            return
        while True:
            try:
                data, sender = sock.recvfrom(m.REPLY_LIMIT + 1)
            except (BlockingIOError, InterruptedError, ConnectionRefusedError):
                break
            except OSError:
                break
            _take(result, data, sender, space, salt, targets)
        if all(result.complete(f) for f in targets):
            return


def _take(result: Result, data: bytes, sender: Address, space: str, salt: str,
          targets: Mapping[str, Address]) -> None:
    found = _decode(result.kind, data, sender, space, salt, targets)
    if found is None:
        return
    factory, reply = found
    got = result.replies.setdefault(factory, {})
    count = reply.get(m.COUNT_FIELD.get(result.kind, ""), 1)
    result.expected[factory] = count
    if len(got) < m.COUNT_LIMIT:
        got[_key(result.kind, reply)] = reply
