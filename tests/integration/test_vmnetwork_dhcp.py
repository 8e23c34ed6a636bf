# SPDX-License-Identifier: BSD-2-Clause
"""The factory network's DHCP offers the /16's broadcast address, so that every DHCP client
reaches the metadata address, checked with real clients against the real libvirtd.

libvirt puts the metadata address (x.x.169.254/32) on the bridge with `brd x.x.169.254`, and
dnsmasq offered that broadcast: ISC dhclient (Debian's ifupdown guests, cloud-init's early DHCP)
applies it, and Linux then refuses TCP to the metadata address ("Network is unreachable").
Here a network namespace stands for the guest: a veth with a slot's MAC on the bridge, and a
real DHCP client in the namespace (dhclient with Debian's own dhclient-script, and busybox
udhcpc); TCP to the metadata address is then tried from the namespace.

The factory network of this host (vac_169.254.0.0) is in use by others, so, as in
test_vac03_libvirt_network.py, the same code runs on a network of its own: a unique name and a
10.N.0.0/16 that stands for 169.254/16 (the module constants patched). About 6 s in all.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import uuid

import cloudinit_env
import pytest
from testbed import require_engine

from vac.backends.libvirt import metadata
from vac.backends.libvirt import network as vmnetwork
from vac.machine.slots import Slot, machine_name

pytestmark = [pytest.mark.libvirt]

FACTORY = "dhcp.example.com"
ORDINAL = 7
DHCLIENT_CONF = ("request subnet-mask, broadcast-address, time-offset, routers, interface-mtu;\n"
                 "timeout 60;\n")
# Debian's dhclient-script, with the DNS and NTP answers left out (they would go to the host's
# /etc): it applies the address with the offered broadcast, as in an ifupdown guest.
DHCLIENT_SCRIPT = ("#!/bin/sh\nunset new_domain_name_servers new_domain_search new_domain_name "
                   "new_ntp_servers new_host_name\nexec /sbin/dhclient-script \"$@\"\n")
UDHCPC_SCRIPT = ("#!/bin/sh\n[ \"$1\" = bound ] || exit 0\necho \"$broadcast\" > \"$0.brd\"\n"
                 "ip addr add \"$ip/$mask\" broadcast \"${broadcast:-+}\" dev \"$interface\"\n")


def run(*args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def free_octet() -> int:
    routes = run("ip", "-o", "-4", "route", "show", "table", "all").stdout
    while True:
        octet = random.randint(100, 250)
        if f"10.{octet}." not in routes:
            return octet


@pytest.fixture
def lab(monkeypatch, tmp_path):
    try:
        import libvirt
        conn = libvirt.open("qemu:///system")
    except Exception as e:  # no libvirt here
        require_engine("libvirt", False, f"{type(e).__name__}: {e}")
        return
    require_engine("dhclient", shutil.which("dhclient") is not None,
                   "apt-get install isc-dhcp-client (scripts/ci/setup-libvirt.sh)")
    tag = uuid.uuid4().hex[:8]
    octet = free_octet()
    name = f"vacdhcp-{tag}"
    monkeypatch.setattr(vmnetwork, "NETWORK_NAME", name)
    monkeypatch.setattr(vmnetwork, "BRIDGE_ADDRESS", f"10.{octet}.169.253")
    monkeypatch.setattr(vmnetwork, "METADATA_ADDRESS", f"10.{octet}.169.254")
    monkeypatch.setattr(vmnetwork, "dhcp_hosts", lambda factory: [
        (Slot(n, "").mac, f"10.{octet}.169.{n}", machine_name(factory, n)) for n in range(100)])
    lab = Lab(tmp_path, f"vdh{tag}", octet)
    yield conn, lab
    lab.close()
    try:
        net = conn.networkLookupByName(name)
        if net.isActive():
            net.destroy()
        net.undefine()
    except libvirt.libvirtError:
        pass
    conn.close()


class Lab:
    """A namespace with a veth on the network's bridge, the guest's side of DHCP."""

    def __init__(self, tmp_path, tag: str, octet: int) -> None:
        self.tmp, self.ns, self.octet = tmp_path, tag, octet
        self.meta = f"10.{octet}.169.254"
        self.host_if, self.guest_if = f"{tag}h", "eth0"
        self.pidfiles = []
        os.makedirs(f"/etc/netns/{self.ns}", exist_ok=True)   # ip netns exec binds it over /etc
        with open(f"/etc/netns/{self.ns}/resolv.conf", "w") as f:
            f.write("# vac test\n")
        self.script = self._write("dhclient-script", DHCLIENT_SCRIPT)
        self.udhcpc_script = self._write("udhcpc-script", UDHCPC_SCRIPT)
        self.conf = self._write("dhclient.conf", DHCLIENT_CONF)
        self.listener = socket.socket()

    def _write(self, name: str, text: str) -> str:
        path = str(self.tmp / name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o755)
        return path

    def plug(self, bridge: str) -> None:
        """A fresh namespace whose eth0 (the slot's MAC) is on the bridge."""
        self.unplug()
        for args in (["netns", "add", self.ns],
                     ["link", "add", self.host_if, "type", "veth", "peer", "name", "vdhtmp",
                      "netns", self.ns],
                     ["-n", self.ns, "link", "set", "vdhtmp", "name", self.guest_if,
                      "address", Slot(ORDINAL, "").mac.lower()],
                     ["-n", self.ns, "link", "set", "lo", "up"],
                     ["-n", self.ns, "link", "set", self.guest_if, "up"],
                     ["link", "set", self.host_if, "master", bridge, "up"]):
            done = run("ip", *args)
            assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr}"

    def unplug(self) -> None:
        for pidfile in self.pidfiles:
            try:
                with open(pidfile) as f:
                    os.kill(int(f.read().strip()), 15)
            except (OSError, ValueError):
                pass
        self.pidfiles = []
        run("ip", "link", "del", self.host_if)
        run("ip", "netns", "del", self.ns)

    def close(self) -> None:
        self.unplug()
        self.listener.close()
        shutil.rmtree(f"/etc/netns/{self.ns}", ignore_errors=True)

    def dhclient(self) -> str:
        """Run ISC dhclient once in the namespace; the lease file's text."""
        lease, pidfile = str(self.tmp / "lease"), str(self.tmp / "dhclient.pid")
        if os.path.exists(lease):
            os.unlink(lease)
        self.pidfiles.append(pidfile)
        done = run("ip", "netns", "exec", self.ns, "unshare", "--uts", "dhclient", "-4", "-1",
                   "-v", "-cf", self.conf, "-sf", self.script, "-lf", lease, "-pf", pidfile,
                   self.guest_if, timeout=120)
        assert done.returncode == 0, f"dhclient: {done.stdout}{done.stderr}"
        with open(lease) as f:
            return f.read()

    def udhcpc(self) -> str:
        """Run busybox udhcpc once in the namespace; the broadcast address it was offered."""
        busybox = shutil.which("busybox")
        assert busybox, "busybox (busybox-static, scripts/ci/setup-libvirt.sh) is missing"
        done = run("ip", "netns", "exec", self.ns, busybox, "udhcpc", "-i", self.guest_if,
                   "-n", "-q", "-f", "-t", "10", "-T", "3", "-s", self.udhcpc_script,
                   timeout=120)
        assert done.returncode == 0, f"udhcpc: {done.stdout}{done.stderr}"
        with open(self.udhcpc_script + ".brd") as f:
            return f.read().strip()

    def guest_address(self) -> str:
        return run("ip", "-n", self.ns, "-o", "-4", "addr", "show", "dev",
                   self.guest_if).stdout

    def tcp_to_metadata(self) -> str:
        """Connect from the namespace to a listener on the metadata address: "ok" or the
        error."""
        if self.listener.getsockname()[1] == 0:
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind((self.meta, 0))
            self.listener.listen(8)
        port = self.listener.getsockname()[1]
        code = ("import socket,sys\ntry:\n socket.create_connection((sys.argv[1], "
                "int(sys.argv[2])), 10).close(); print('ok')\nexcept OSError as e: print(e)")
        done = run("ip", "netns", "exec", self.ns, "python3", "-c", code, self.meta,
                   str(port))
        return done.stdout.strip()


def test_dhcp_offers_the_broadcast_of_the_16_and_the_metadata_address_answers(lab):
    conn, lab = lab
    vmnetwork.ensure_network(conn, FACTORY)
    net = conn.networkLookupByName(vmnetwork.NETWORK_NAME)
    assert vmnetwork.check_network(net.XMLDesc(0), FACTORY) == ([], [])
    lab.plug(net.bridgeName())
    lease = lab.dhclient()
    assert f"fixed-address 10.{lab.octet}.169.{ORDINAL};" in lease
    assert f"option broadcast-address 10.{lab.octet}.255.255;" in lease, lease
    assert f"brd 10.{lab.octet}.255.255 " in lab.guest_address()
    assert lab.tcp_to_metadata() == "ok"
    lab.plug(net.bridgeName())
    assert lab.udhcpc() == f"10.{lab.octet}.255.255"
    assert lab.tcp_to_metadata() == "ok"


def test_cloud_inits_own_early_dhcp_reaches_the_metadata_service(lab, paths, tmp_path):
    """cloud-init's init-local OpenStack datasource (chosen when the VM's SMBIOS product name
    is "OpenStack Nova"): its own DHCP on eth0, then Vac's real metadata service on the
    metadata address, from the namespace. About 3 s."""
    site = cloudinit_env.SITE
    require_engine("cloud-init", os.path.isdir(f"{site}/cloudinit"),
                   "scripts/ci/setup-cloudinit.sh unpacks Debian's cloud-init")
    conn, lab = lab
    vmnetwork.ensure_network(conn, FACTORY)
    net = conn.networkLookupByName(vmnetwork.NETWORK_NAME)
    lab.plug(net.bridgeName())
    cloudinit_env.machine(paths, ORDINAL)
    guest = f"10.{lab.octet}.169.{ORDINAL}"
    service = metadata.MetadataService(
        paths, cloudinit_env.FACTORY,
        client_address=lambda peer: f"169.254.169.{ORDINAL}" if peer == guest else peer)
    server = metadata.serve(service, lab.meta, 0)
    try:
        done = run("ip", "netns", "exec", lab.ns, cloudinit_env.PYTHON,
                   cloudinit_env.DRIVER, "openstack-local",
                   f"http://{lab.meta}:{server.server_address[1]}", str(tmp_path), site,
                   lab.guest_if, timeout=180)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["ok"], (found["warnings"], done.stderr[-3000:])
    assert found["instance_id"] == cloudinit_env.JOB_ID
    assert found["user_data"] == cloudinit_env.USER_DATA
    assert found["local_hostname"] == f"f1-{ORDINAL:02d}"


def test_a_network_without_the_option_is_fixed_live_on_its_bridge(lab):
    """The defect as filed (a network defined without the broadcast option), and the repair
    vacd makes while VMs use such a network: the metadata address re-added to the running
    bridge without a broadcast address, after which the same dnsmasq offers the /16's
    broadcast."""
    import xml.etree.ElementTree as ET

    conn, lab = lab
    old = ET.fromstring(vmnetwork.network_xml(FACTORY))
    old.remove(old.find(f"{{{vmnetwork.DNSMASQ_NS}}}options"))
    old_xml = ET.tostring(old, encoding="unicode")
    assert vmnetwork.check_network(old_xml, FACTORY)[0] == [vmnetwork.missing_broadcast()]
    net = conn.networkDefineXML(old_xml)
    net.create()
    bridge = net.bridgeName()
    lab.plug(bridge)
    lease = lab.dhclient()
    assert f"option broadcast-address {lab.meta};" in lease, lease   # the defect
    assert "unreachable" in lab.tcp_to_metadata().lower()
    vmnetwork.fix_live_address(bridge)
    shown = run("ip", "-o", "-4", "addr", "show", "dev", bridge).stdout
    assert vmnetwork.live_address_fix(shown) == [] and f" {lab.meta}/32 " in shown
    lab.plug(bridge)
    lease = lab.dhclient()
    assert f"option broadcast-address 10.{lab.octet}.255.255;" in lease, lease
    assert lab.tcp_to_metadata() == "ok"
