# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s check that the factory's own name resolves to an address its VacQuery
responder listens on: the other factories ask it by that name, at every address
it resolves to (AAAA and A), so an address it does not listen on costs them an ask, and a
name without one makes the factory silent to the whole space.

Where the responder listens follows vac.space.responder.bind_udp: with no
vacquery_address every address of this host, IPv6 and IPv4; 0.0.0.0 IPv4 ones only; ::
IPv6 ones only; else that one address. An address is this host's when a UDP socket can be
bound to it. A factory alone in its space (no other in `factories`) is asked by no one:
ok. Never raises: every finding is a line.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Callable, List, Optional, Sequence, Tuple

from vac.config.model import Settings
from vac.ops.checks import FAIL, OK, WARN, Check
from vac.space import client

NAME = "own-name"
Resolver = Callable[[str, int], Sequence[Tuple[str, int]]]


def is_local(address: str) -> bool:
    """True if this host holds the address (a UDP socket binds to it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.bind((address, 0))
        return True
    except OSError:
        return False


def listened(address: str, bind: str, bound: Optional[str],
             local: Callable[[str], bool]) -> bool:
    """Whether a responder bound per vacquery_address `bind` (`bound`: that address
    resolved) receives what is sent to `address`."""
    six = ":" in address
    if not bind:
        return local(address)
    if bind == "0.0.0.0":
        return not six and local(address)
    if bind == "::":
        return six and local(address)
    return bound is not None and _same(address, bound)


def _same(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False


def own_name(settings: Settings, resolver: Resolver = client.resolve,
             local: Callable[[str], bool] = is_local) -> List[Check]:
    name, port, bind = settings.factory_name, settings.vacquery_port, settings.vacquery_address
    if not [f for f in client.canonical_list(settings.factories, name) if f != name]:
        return [Check(NAME, OK, "no other factory in `factories`: none asks this one by "
                      "name")]
    found = [a for a, _ in resolver(name, port)]
    if not found:
        return [Check(NAME, FAIL, f"factory_name {name} does not resolve: the other "
                      "factories of the space cannot ask this one",
                      f"give {name} an A and/or AAAA record (or set factory_name to a name "
                      "that has one)")]
    bound = None
    if bind and bind not in ("0.0.0.0", "::"):
        targets = resolver(bind, port)
        bound = targets[0][0] if targets else None
    heard = [a for a in found if listened(a, bind, bound, local)]
    where = f"vacquery_address {bind}" if bind else "every address (the default)"
    if not heard:
        return [Check(NAME, FAIL, f"{name} resolves to {', '.join(found)}, none of which "
                      f"the responder listens on ({where})",
                      "set vacquery_address to one of those addresses (or leave it unset), "
                      f"or correct the records of {name}")]
    missed = [a for a in found if a not in heard]
    if missed:
        return [Check(NAME, WARN, f"{name} resolves to {', '.join(found)}; the responder "
                      f"({where}) does not listen on {', '.join(missed)}: factories asking "
                      "there wait a round before the next address",
                      f"remove those records of {name}, or leave vacquery_address unset")]
    return [Check(NAME, OK, f"{name} resolves to {', '.join(found)}, where the responder "
                  f"listens ({where})")]
