# SPDX-License-Identifier: BSD-2-Clause
"""Switching a running Vac 03 factory (libvirt): its NAT network is completed, not redefined.

The original defined its network without the metadata address 169.254.169.254 (it was
one <ip address='169.254.169.253' netmask='255.255.0.0'> with 100 static DHCP hosts, NAT). With a
domain running on such a network, ensure_network must leave the network running (same bridge,
the domain keeps its interface), put the address into the definition and onto the running bridge;
once no domain uses it, the network is restarted on the completed definition.

The factory network of this host (vac_169.254.0.0) is in use by others, so this test runs the
same code on a network of its own: a unique name and a 10.N.0.0/16 that stands for 169.254/16
(vac.backends.libvirt.network's module constants patched), against the real libvirtd.
"""
from __future__ import annotations

import os
import random
import subprocess
import uuid
import xml.etree.ElementTree as ET

import pytest
from testbed import require_engine

from vac.backends.libvirt import network as vmnetwork
from vac.errors import BackendError
from vac.machine.slots import Slot, machine_name

pytestmark = [pytest.mark.libvirt]

FACTORY = "v3net.example.com"


def vac03_network_xml(name: str, octet: int) -> str:
    """The network as the original defined it: no 169.254.169.254 (here 10.N.169.254)."""
    hosts = "".join(f"<host mac='{Slot(n, '').mac}' name='{machine_name(FACTORY, n)}' "
                    f"ip='10.{octet}.169.{n}'/>" for n in range(100))
    return (f"<network><name>{name}</name><forward mode='nat'/>"
            f"<ip address='10.{octet}.169.253' netmask='255.255.0.0'><dhcp>{hosts}</dhcp></ip>"
            f"</network>")


def domain_xml(name: str, network: str) -> str:
    """A small running domain with one interface on the network (no disk: it idles in BIOS)."""
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>32</memory>"
            f"<vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>"
            f"<devices><interface type='network'><source network='{network}'/>"
            f"<model type='e1000'/></interface></devices></domain>")


def addresses(bridge: str) -> str:
    return subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge],
                          capture_output=True, text=True, timeout=10).stdout


def ifindex(bridge: str) -> str:
    with open(f"/sys/class/net/{bridge}/ifindex") as f:
        return f.read().strip()


@pytest.fixture
def lab(monkeypatch):
    try:
        import libvirt
        conn = libvirt.open("qemu:///system")
    except Exception as e:  # no libvirt here
        require_engine("libvirt", False, f"{type(e).__name__}: {e}")
        return
    tag = uuid.uuid4().hex[:8]
    octet = random.randint(100, 250)
    name = f"vac03t-{tag}"
    monkeypatch.setattr(vmnetwork, "NETWORK_NAME", name)
    monkeypatch.setattr(vmnetwork, "BRIDGE_ADDRESS", f"10.{octet}.169.253")
    monkeypatch.setattr(vmnetwork, "METADATA_ADDRESS", f"10.{octet}.169.254")
    monkeypatch.setattr(vmnetwork, "dhcp_hosts", lambda factory: [
        (Slot(n, "").mac, f"10.{octet}.169.{n}", machine_name(factory, n)) for n in range(100)])
    net = conn.networkDefineXML(vac03_network_xml(name, octet))
    net.create()
    doms = []
    yield conn, net, octet, doms, f"v3dom-{tag}"
    for dom in doms:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
    try:
        net = conn.networkLookupByName(name)
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError:
        pass
    conn.close()


def test_vac03_network_in_use_is_completed_live_then_restarted_when_idle(lab):
    import libvirt

    conn, net, octet, doms, dom_name = lab
    meta = f"10.{octet}.169.254"
    bridge, net_uuid = net.bridgeName(), net.UUIDString()
    assert f" {meta}/32 " not in addresses(bridge)
    dom = conn.createXML(domain_xml(dom_name, vmnetwork.NETWORK_NAME), 0)
    doms.append(dom)
    index = ifindex(bridge)
    for _ in range(2):                        # the second call finds it complete: no change
        vmnetwork.ensure_network(conn, FACTORY)
        net = conn.networkLookupByName(vmnetwork.NETWORK_NAME)
        assert net.isActive() and net.UUIDString() == net_uuid and net.bridgeName() == bridge
        assert ifindex(bridge) == index       # the bridge was never torn down
        assert dom.isActive() and dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert f" {meta}/32 scope " in addresses(bridge)   # no brd: dnsmasq offers the /16's
        inactive = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
        assert vmnetwork.check_network(inactive, FACTORY) == ([], [])
        assert [ip.get("address") for ip in ET.fromstring(inactive).findall("ip")].count(meta) == 1
        assert vmnetwork.check_network(net.XMLDesc(0), FACTORY)[0] == \
            [vmnetwork.missing_metadata(), vmnetwork.missing_broadcast()]
    dom.destroy()
    vmnetwork.ensure_network(conn, FACTORY)   # idle now: restarted on the new definition
    net = conn.networkLookupByName(vmnetwork.NETWORK_NAME)
    assert net.isActive() and net.isPersistent() and net.autostart()
    assert net.UUIDString() == net_uuid
    assert vmnetwork.check_network(net.XMLDesc(0), FACTORY) == ([], [])
    assert f" {meta}/32 " in addresses(net.bridgeName())


def test_a_foreign_network_in_use_is_left_alone(lab):
    import libvirt

    conn, net, octet, doms, dom_name = lab
    xml = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    net.destroy()
    ranged = xml.replace("<dhcp>", f"<dhcp><range start='10.{octet}.200.1' "
                                   f"end='10.{octet}.200.9'/>")
    net = conn.networkDefineXML(ranged)
    net.create()
    net_uuid, bridge = net.UUIDString(), net.bridgeName()
    doms.append(conn.createXML(domain_xml(dom_name, vmnetwork.NETWORK_NAME), 0))
    index = ifindex(bridge)
    with pytest.raises(BackendError, match="left alone while running VMs use it"):
        vmnetwork.ensure_network(conn, FACTORY)
    net = conn.networkLookupByName(vmnetwork.NETWORK_NAME)
    assert net.isActive() and net.UUIDString() == net_uuid and ifindex(bridge) == index
    assert os.path.exists(f"/sys/class/net/{bridge}")
