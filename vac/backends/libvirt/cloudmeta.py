# SPDX-License-Identifier: BSD-2-Clause
"""Metadata answers that cloud-init's datasources read besides the machine's own context
(learnt from Debian bookworm's cloud-init 22.4, whose datasources
tests/integration/test_cloudinit_datasources.py runs against the service):

- EC2 `meta-data/network/interfaces/macs/<mac>/{device-number,local-ipv4s,mac}`: the VM's one
  interface, as the factory network's DHCP configures it. cloud-init's EC2 datasource renders
  DHCP on that MAC from it, and without it warns "Metadata 'network' key not valid".
- OpenStack `vendor_data.json` and `vendor_data2.json`: `{}` (Vac has no vendor data; a 404
  is allowed too, but answering leaves the unserved-request log to real surprises).
- OpenStack `network_data.json` (over HTTP and on the config drive): the VM's one interface,
  by its MAC, with DHCP for IPv4 only, which is what the factory network offers. Without it,
  cloud-init falls back to DHCP for IPv4 and IPv6 on the first interface, and an image with
  ifupdown then waits minutes at boot for a DHCPv6 answer that never comes.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from vac.machine.slots import Slot

OPENSTACK_EMPTY = ("vendor_data.json", "vendor_data2.json")


def ec2_network(ordinal: Optional[int]) -> Dict[str, str]:
    """The EC2 meta-data leaves and listings under `network` for the VM in slot `ordinal`
    (lower-case MAC, as cloud-init matches it); none without a slot."""
    if ordinal is None:
        return {}
    slot = Slot(ordinal, "")
    mac = slot.mac.lower()
    base = f"network/interfaces/macs/{mac}"
    return {
        "network": "interfaces/",
        "network/interfaces": "macs/",
        "network/interfaces/macs": f"{mac}/",
        base: "device-number\nlocal-ipv4s\nmac",
        f"{base}/device-number": "0",
        f"{base}/local-ipv4s": slot.ip,
        f"{base}/mac": mac,
    }


def openstack_network_data(ordinal: Optional[int]) -> Dict[str, Any]:
    """network_data.json for the VM in slot `ordinal` (lower-case MAC); {} without a slot."""
    if ordinal is None:
        return {}
    mac = Slot(ordinal, "").mac.lower()
    return {"links": [{"id": "vac0", "type": "phy", "ethernet_mac_address": mac}],
            "networks": [{"id": "vac0-ipv4", "type": "ipv4_dhcp", "link": "vac0",
                          "network_id": "vac"}],
            "services": []}
