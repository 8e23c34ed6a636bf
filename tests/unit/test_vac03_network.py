# SPDX-License-Identifier: BSD-2-Clause
"""The original Vac's NAT network (no 169.254.169.254) is recognised and completed."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from vac.backends.libvirt import network as vmnetwork


def vac03_xml(factory: str = "f1.example.com") -> str:
    """vac_169.254.0.0 as the original defined it (its NAT network, checked every cycle)."""
    net = ET.fromstring(vmnetwork.network_xml(factory))
    for ip in net.findall("ip"):
        if ip.get("address") == "169.254.169.254":
            net.remove(ip)
    return ET.tostring(net, encoding="unicode")


def test_the_originals_network_lacks_only_the_metadata_address():
    problems, renamed = vmnetwork.check_network(vac03_xml(), "f1.example.com")
    assert problems == [vmnetwork.missing_metadata()] and renamed == []


def test_completing_it_adds_the_address_once_and_keeps_the_rest():
    done = vmnetwork.with_metadata_ip(vac03_xml())
    assert vmnetwork.check_network(done, "f1.example.com") == ([], [])
    again = vmnetwork.with_metadata_ip(done)
    ips = [ip.attrib for ip in ET.fromstring(again).findall("ip")]
    assert ips.count({"address": "169.254.169.254", "prefix": "32"}) == 1 and len(ips) == 2
    assert len(ET.fromstring(again).findall("ip/dhcp/host")) == 100
