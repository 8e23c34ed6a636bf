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


DNSMASQ = "{http://libvirt.org/schemas/network/dnsmasq/1.0}"


def without_option(xml: str) -> str:
    net = ET.fromstring(xml)
    net.remove(net.find(f"{DNSMASQ}options"))
    return ET.tostring(net, encoding="unicode")


def test_dhcp_offers_the_broadcast_of_the_16_by_number():
    """libvirt's /32 metadata address made dnsmasq offer broadcast 169.254.169.254."""
    xml = vmnetwork.network_xml("f1.example.com")
    assert "xmlns:dnsmasq=\"http://libvirt.org/schemas/network/dnsmasq/1.0\"" in xml
    options = ET.fromstring(xml).findall(f"{DNSMASQ}options/{DNSMASQ}option")
    assert [o.get("value") for o in options] == ["dhcp-option=28,169.254.255.255"]


def test_a_network_without_the_broadcast_is_completed_not_rebuilt():
    old = without_option(vmnetwork.network_xml("f1.example.com"))
    problems, _ = vmnetwork.check_network(old, "f1.example.com")
    assert problems == [vmnetwork.missing_broadcast()]
    assert "169.254.255.255" in problems[0] and vmnetwork.completable(problems)
    done = vmnetwork.with_metadata_ip(old)
    assert vmnetwork.check_network(done, "f1.example.com") == ([], [])
    assert vmnetwork.with_metadata_ip(done).count("dhcp-option=28") == 1
    assert not vmnetwork.completable(problems + ["not a NAT network"])
    assert not vmnetwork.completable([])


def test_the_originals_network_lacks_the_address_and_the_option():
    net = ET.fromstring(without_option(vmnetwork.network_xml("f1.example.com")))
    net.remove(net.findall("ip")[1])
    problems, _ = vmnetwork.check_network(ET.tostring(net, encoding="unicode"), "f1.example.com")
    assert set(problems) == {vmnetwork.missing_metadata(), vmnetwork.missing_broadcast()}
    done = vmnetwork.with_metadata_ip(ET.tostring(net, encoding="unicode"))
    assert vmnetwork.check_network(done, "f1.example.com") == ([], [])


def test_live_metadata_address_loses_its_broadcast():
    head = "3085: virbr1    inet 169.254.169.253/16 brd 169.254.255.255 scope global virbr1\\ x\n"
    wrong = "3085: virbr1    inet 169.254.169.254/32 brd 169.254.169.254 scope global virbr1\\ x\n"
    right = "3085: virbr1    inet 169.254.169.254/32 scope global virbr1\\ x\n"
    add = ["addr", "add", "169.254.169.254/32", "dev"]
    assert vmnetwork.live_address_fix(head + wrong) == \
        [["addr", "del", "169.254.169.254/32", "dev"], add]
    assert vmnetwork.live_address_fix(head + right) == []
    assert vmnetwork.live_address_fix(head) == [add]
    assert vmnetwork.live_address_fix("") == [add]
