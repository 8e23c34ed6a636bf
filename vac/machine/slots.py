# SPDX-License-Identifier: BSD-2-Clause
"""Slots: the numbered places on a factory, with their machine names and addresses (pure)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

BRIDGE_ADDRESS = "169.254.169.253"
METADATA_ADDRESS = "169.254.169.254"
NETMASK = "255.255.0.0"
MAX_ADDRESSED_ORDINAL = 252  # .253 and .254 belong to the factory


@dataclass(frozen=True)
class Slot:
    """One slot: ordinal n on factory host.domain is host-NN.domain at 169.254.169.n."""

    ordinal: int
    name: str

    @property
    def ip(self) -> str:
        return f"169.254.169.{self.ordinal}"

    @property
    def mac(self) -> str:
        return "56:4D:" + ":".join(f"{b:02X}" for b in (169, 254, 169, self.ordinal))

    @property
    def vnc_port(self) -> int:
        return 5900 + self.ordinal

    @property
    def has_address(self) -> bool:
        return self.ordinal <= MAX_ADDRESSED_ORDINAL


def machine_name(factory_name: str, ordinal: int) -> str:
    """factory1.example.com, 5 -> factory1-05.example.com (the original's %02d)."""
    host, _, domain = factory_name.partition(".")
    return f"{host}-{ordinal:02d}.{domain}" if domain else f"{host}-{ordinal:02d}"


def make_slots(factory_name: str, count: int) -> Tuple[Slot, ...]:
    """The factory's slots: one per processor counted on the host (not total_processors)."""
    return tuple(Slot(n, machine_name(factory_name, n)) for n in range(count))


def ordinal_of(factory_name: str, name: str) -> int:
    """The ordinal of a machine name of this factory, or -1 if it is not one of ours."""
    host, _, domain = factory_name.partition(".")
    head, _, tail = name.partition(".")
    if tail != domain or not head.startswith(host + "-"):
        return -1
    digits = head[len(host) + 1:]
    return int(digits) if digits.isdigit() and len(digits) >= 2 else -1
