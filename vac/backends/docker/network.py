# SPDX-License-Identifier: BSD-2-Clause
"""A container's place on its machinetype's docker_network (ALICE VOBOX: containers appear as
normal machines on the network).

Without docker_network a container is in docker_network_mode (bridge), as before. With it, the
container joins that existing network; on a macvlan network it gets its slot's own IP and MAC
as a VM does (vac.machine.slots: the slot's address in the network's range, MAC 56:4D: + the
IP's bytes), on an ipvlan network its slot's IP (ipvlan children share their parent's MAC), on
any other network (a bridge) what the engine gives it. Docker writes the container's
/etc/hosts with its host name (the machine name) at that IP.

The MAC is asked for where the engine's API version wants it: in the container's Config
(MacAddress, API < 1.44, where an endpoint's MacAddress is ignored) or in the network's
endpoint settings (API >= 1.44, where the Config field is deprecated). Nothing here talks to
the engine: the backend inspects the network and creates the container.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional

from vac.config.model import MachineType
from vac.errors import BackendError
from vac.machine.slots import Slot, address_on, mac_of

NAME = "docker"
ADDRESSED_DRIVERS = ("macvlan", "ipvlan")
OWN_MAC_DRIVERS = ("macvlan",)
MAC_PER_ENDPOINT_API = (1, 44)


@dataclass(frozen=True)
class Attachment:
    """The network a machine's container joins, and its own address there if it has one."""

    network: str
    driver: str
    ip: Optional[str] = None
    mac: Optional[str] = None


def network_mode(mt: MachineType) -> str:
    """The HostConfig NetworkMode: docker_network when set, else docker_network_mode."""
    return mt.docker_network or mt.docker_network_mode


def _ipv4_pool(attrs: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    """The network's first IPAM config with an IPv4 subnet."""
    for pool in ((attrs.get("IPAM") or {}).get("Config") or []):
        if ":" not in str(pool.get("Subnet") or ":"):
            return pool
    return None


def attachment(attrs: Mapping[str, Any], slot: Slot, machinetype: str,
               network: Optional[str] = None) -> Attachment:
    """Where the container of this slot goes on the network the engine described (attrs of
    inspect_network), named as docker_network names it (a name or an id: the endpoint must be
    keyed as the NetworkMode is, or the engine ignores its address).

    Raises:
        BackendError: a macvlan/ipvlan network without an IPv4 subnet, or no address for the
            slot in its range.
    """
    name, driver = network or str(attrs.get("Name") or ""), str(attrs.get("Driver") or "")
    if driver not in ADDRESSED_DRIVERS:
        return Attachment(name, driver)
    pool = _ipv4_pool(attrs)
    where = f"machinetype {machinetype}: docker_network {name} ({driver})"
    if pool is None:
        raise BackendError(NAME, f"{where} has no IPv4 subnet; create it with --subnet",
                           slot.name)
    try:
        ip = address_on(slot.ordinal, str(pool["Subnet"]), pool.get("IPRange") or None,
                        pool.get("Gateway") or None)
    except ValueError as e:
        raise BackendError(NAME, f"{where}: {e}", slot.name) from e
    if ip is None:
        raise BackendError(NAME, f"{where}: slot {slot.ordinal} has no address in "
                                 f"{pool.get('IPRange') or pool['Subnet']}", slot.name)
    return Attachment(name, driver, ip, mac_of(ip) if driver in OWN_MAC_DRIVERS else None)


def mac_per_endpoint(api_version: str) -> bool:
    """True if this API version takes a container's MAC in its endpoint settings."""
    try:
        major, minor = (int(part) for part in str(api_version).split(".")[:2])
    except ValueError:
        return True
    return (major, minor) >= MAC_PER_ENDPOINT_API


def create_args(api: Any, att: Attachment) -> Dict[str, Any]:
    """The extra keyword arguments of APIClient.create_container for this attachment."""
    if att.ip is None:
        return {}
    per_endpoint = mac_per_endpoint(api.api_version)
    endpoint = api.create_endpoint_config(ipv4_address=att.ip,
                                          mac_address=att.mac if per_endpoint else None)
    args: Dict[str, Any] = {"networking_config":
                            api.create_networking_config({att.network: endpoint})}
    if att.mac and not per_endpoint:
        args["mac_address"] = att.mac
    return args


def record(att: Optional[Attachment]) -> Dict[str, str]:
    """What backend.json keeps of the attachment: the network, and the slot's own IP and MAC
    where the container has them (vac slots and the status page show them)."""
    if att is None:
        return {}
    kept = {"network": att.network, "ip": att.ip or "", "mac": att.mac or ""}
    return {key: value for key, value in kept.items() if value}


def missing(mt: MachineType, slot: Slot) -> BackendError:
    """The creation error of a docker_network the engine does not have."""
    return BackendError(NAME, f"machinetype {mt.name}: docker_network {mt.docker_network} "
                              f"does not exist on the engine (docker network ls)", slot.name)
