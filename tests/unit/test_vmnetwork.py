# SPDX-License-Identifier: BSD-2-Clause
"""The factory's NAT network definition and its check (pure; the real network is integration)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from vac.backends.libvirt import network as vmnetwork


def test_network_definition():
    net = ET.fromstring(vmnetwork.network_xml("f1.example.com", "eth1"))
    assert net.findtext("name") == "vac_169.254.0.0"
    assert net.find("forward").attrib == {"mode": "nat", "dev": "eth1"}
    ips = net.findall("ip")
    assert ips[0].attrib == {"address": "169.254.169.253", "netmask": "255.255.0.0"}
    assert ips[1].attrib == {"address": "169.254.169.254", "prefix": "32"}
    hosts = ips[0].findall("dhcp/host")
    assert len(hosts) == 100 and ips[0].find("dhcp/range") is None
    assert hosts[5].attrib == {"mac": "56:4D:A9:FE:A9:05", "ip": "169.254.169.5",
                               "name": "f1-05.example.com"}
    assert hosts[99].get("ip") == "169.254.169.99"
    assert ET.fromstring(vmnetwork.network_xml("f1.example.com")).find("forward").attrib == \
        {"mode": "nat"}


def test_own_definition_passes_the_check():
    xml = vmnetwork.network_xml("f1.example.com")
    assert vmnetwork.check_network(xml, "f1.example.com") == ([], [])


def test_check_finds_structural_problems():
    xml = vmnetwork.network_xml("f1.example.com")
    no_meta = xml.replace("<ip address=\"169.254.169.254\" prefix=\"32\" />", "")
    assert "169.254.169.254" in " ".join(vmnetwork.check_network(no_meta, "f1.example.com")[0])
    other = xml.replace("169.254.169.253", "192.168.122.1")
    assert vmnetwork.check_network(other, "f1.example.com")[0]
    assert vmnetwork.check_network(xml, "f1.example.com", "eth1")[0]
    moved = xml.replace('ip="169.254.169.7"', 'ip="169.254.169.77"')
    assert vmnetwork.check_network(moved, "f1.example.com")[0]
    assert vmnetwork.check_network("<network", "f1.example.com")[0]


def test_renamed_factory_is_a_rename_not_a_rebuild():
    xml = vmnetwork.network_xml("old.example.com")
    problems, renamed = vmnetwork.check_network(xml, "f1.example.com")
    assert problems == [] and len(renamed) == 100
    assert renamed[3] == ("56:4D:A9:FE:A9:03", "169.254.169.3", "f1-03.example.com")
    assert ET.fromstring(vmnetwork.host_xml(*renamed[3])).attrib == \
        {"mac": "56:4D:A9:FE:A9:03", "ip": "169.254.169.3", "name": "f1-03.example.com"}
