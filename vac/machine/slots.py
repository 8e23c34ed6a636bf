# SPDX-License-Identifier: BSD-2-Clause
"""Slots: the numbered places on a factory, with their machine names and addresses (pure).

A slot's MAC is the original's rule applied to its IP: 56:4D: and the IP's four bytes in
upper-case hex. VMs have the IP 169.254.169.<ordinal> on the factory's NAT network; a
container on a macvlan/ipvlan docker_network has the <ordinal>-th usable address of that
network's range (address_on), which for a network like the VMs' (subnet 169.254.0.0/16, range
169.254.169.0/24, gateway 169.254.169.253) is the same address.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Tuple

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
        return mac_of(self.ip)

    @property
    def vnc_port(self) -> int:
        return 5900 + self.ordinal

    @property
    def has_address(self) -> bool:
        return self.ordinal <= MAX_ADDRESSED_ORDINAL


def mac_of(ip: str) -> str:
    """169.254.169.5 -> 56:4D:A9:FE:A9:05: the MAC of a slot with this IPv4 address."""
    return "56:4D:" + ":".join(f"{int(b):02X}" for b in ip.split("."))


def address_on(ordinal: int, subnet: str, ip_range: Optional[str] = None,
               gateway: Optional[str] = None) -> Optional[str]:
    """The slot's IPv4 address on a network: the ordinal-th usable address (from 0) of
    ip_range if given, else of subnet, where the subnet's network and broadcast addresses and
    the gateway are not usable; None if the range has no such address.

    Raises:
        ValueError: subnet or ip_range is not an IPv4 network, or ip_range is not inside it.
    """
    net = ipaddress.IPv4Network(subnet, strict=False)
    pool = ipaddress.IPv4Network(ip_range, strict=False) if ip_range else net
    if not pool.subnet_of(net):
        raise ValueError(f"ip range {pool} is not inside subnet {net}")
    unusable = {ipaddress.IPv4Address(gateway)} if gateway else set()
    if net.prefixlen < 31:
        unusable |= {net.network_address, net.broadcast_address}
    left = ordinal
    for address in (pool.network_address + i for i in range(pool.num_addresses)):
        if address in unusable:
            continue
        if left == 0:
            return str(address)
        left -= 1
    return None


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
