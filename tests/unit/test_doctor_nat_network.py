# SPDX-License-Identifier: BSD-2-Clause
"""vac doctor's nat-network line reports a running network that is not as Vac defines it, e.g.
one whose DHCP offers the metadata address as broadcast."""
from __future__ import annotations

import sys
import types
import xml.etree.ElementTree as ET

from vac.backends.libvirt import network as vmnetwork
from vac.backends.checks import Check
from vac.backends.libvirt import checks as libvirtchecks


class FakeNet:
    def __init__(self, xml: str) -> None:
        self.xml = xml

    def isActive(self) -> bool:
        return True

    def bridgeName(self) -> str:
        return "virbr9"

    def XMLDesc(self, flags: int) -> str:
        return self.xml


def doctor_line(monkeypatch, xml: str) -> Check:
    conn = types.SimpleNamespace(networkLookupByName=lambda name: FakeNet(xml),
                                 close=lambda: None)
    fake = types.ModuleType("libvirt")
    fake.libvirtError = Exception
    fake.open = lambda uri: conn
    monkeypatch.setitem(sys.modules, "libvirt", fake)
    settings = types.SimpleNamespace(libvirt_uri="qemu:///system", factory_name="f1.example.com",
                                     forward_dev=None, fix_networking=True)
    return libvirtchecks.nat_network(settings)


def test_a_network_as_vac_defines_it_is_ok(monkeypatch):
    line = doctor_line(monkeypatch, vmnetwork.network_xml("f1.example.com"))
    assert line.status == "ok" and "active on virbr9" in line.detail


def test_a_network_without_the_broadcast_option_is_reported(monkeypatch):
    net = ET.fromstring(vmnetwork.network_xml("f1.example.com"))
    net.remove(net.find(f"{{{vmnetwork.DNSMASQ_NS}}}options"))
    line = doctor_line(monkeypatch, ET.tostring(net, encoding="unicode"))
    assert line.status != "ok"
    assert "dhcp-option=28,169.254.255.255" in line.detail and "169.254.169.254" in line.detail
    assert "vacd" in line.fix
