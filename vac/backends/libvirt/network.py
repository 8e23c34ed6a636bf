# SPDX-License-Identifier: BSD-2-Clause
"""The factory's libvirt NAT network vac_169.254.0.0, checked and repaired every cycle.

    <network>  forward nat [dev=forward_dev]
      ip 169.254.169.253/16 with DHCP: 100 static hosts, ordinal n -> MAC 56:4D:A9:FE:A9:nn,
                                       IP 169.254.169.n, name = the slot's FQDN; no range
      ip 169.254.169.254/32            the metadata address, on the same bridge (the original
                                       used a dummy0 interface, which these kernels lack)
      dnsmasq:options  dhcp-option=28,169.254.255.255   the broadcast address DHCP offers

The broadcast option is needed because libvirt puts 169.254.169.254/32 on the bridge with
`brd 169.254.169.254`, and dnsmasq (whose static range has no netmask of its own) takes the
broadcast of the last bridge address inside the /16: without the option every offer says
broadcast 169.254.169.254; clients that apply it (ISC dhclient with ifupdown, cloud-init's
early DHCP) then treat the metadata address as a local broadcast and cannot open TCP to it.
It is given by number: dnsmasq's own option 28 is then not sent.

libvirt's dnsmasq gives the VMs DHCP and DNS; the VMs' gateway is 169.254.169.253. Everything
goes through the libvirt API (no shell, no brctl/ifconfig), except adding the metadata address
to a running bridge. A network whose addresses or MAC -> IP table differ is destroyed and
redefined, but never while a running domain uses it (then it is left alone and reported); a
network whose host names alone differ (factory renamed) gets them in its definition at once
and live when no VM uses it. The original Vac's network (no 169.254.169.254) is completed
without a restart: the address goes into its definition and onto the running bridge (`ip addr
add`), and the network is restarted on that definition only when no VM uses it. A network
without the broadcast option (the original's, and this Vac's earlier ones) is completed the same
way; while VMs use it, the metadata address on the running bridge is re-added without a
broadcast (`ip addr del` + `add`), which makes the running dnsmasq offer 169.254.255.255.
"""
from __future__ import annotations

import ipaddress
import logging
import xml.etree.ElementTree as ET
from typing import Any, Dict, List, Optional, Tuple

from vac import subp
from vac.errors import BackendError, ProcessError
from vac.machine.slots import BRIDGE_ADDRESS, METADATA_ADDRESS, NETMASK, Slot, machine_name

log = logging.getLogger(__name__)

NETWORK_NAME = "vac_169.254.0.0"
DHCP_HOSTS = 100
DNSMASQ_NS = "http://libvirt.org/schemas/network/dnsmasq/1.0"
ET.register_namespace("dnsmasq", DNSMASQ_NS)
HINTS = ("is 169.254.0.0/16 already used by another interface or libvirt network (Zeroconf, "
         "a stale bridge)? is dnsmasq-base installed? is a stale dnsmasq listening on "
         f"{BRIDGE_ADDRESS}?")


def dhcp_hosts(factory_name: str) -> List[Tuple[str, str, str]]:
    """(MAC, IP, name) of the static DHCP hosts: ordinals 0-99."""
    return [(Slot(n, "").mac, Slot(n, "").ip, machine_name(factory_name, n))
            for n in range(DHCP_HOSTS)]


def network_xml(factory_name: str, forward_dev: Optional[str] = None) -> str:
    """The network's definition."""
    net = ET.Element("network")
    ET.SubElement(net, "name").text = NETWORK_NAME
    forward = ET.SubElement(net, "forward", mode="nat")
    if forward_dev:
        forward.set("dev", forward_dev)
    ET.SubElement(net, "bridge", stp="off", delay="0")
    ip = ET.SubElement(net, "ip", address=BRIDGE_ADDRESS, netmask=NETMASK)
    dhcp = ET.SubElement(ip, "dhcp")
    for mac, address, name in dhcp_hosts(factory_name):
        ET.SubElement(dhcp, "host", mac=mac, name=name, ip=address)
    ET.SubElement(net, "ip", address=METADATA_ADDRESS, prefix="32")
    _add_broadcast_option(net)
    return ET.tostring(net, encoding="unicode")


def broadcast_address() -> str:
    """The broadcast address of the VMs' /16 (169.254.255.255)."""
    return str(ipaddress.IPv4Network(f"{BRIDGE_ADDRESS}/{NETMASK}", strict=False)
               .broadcast_address)


def broadcast_option() -> str:
    """The dnsmasq option that makes DHCP offer the /16's broadcast address (option 28)."""
    return f"dhcp-option=28,{broadcast_address()}"


def _dnsmasq_options(net: ET.Element) -> List[str]:
    return [o.get("value") or "" for o in
            net.findall(f"{{{DNSMASQ_NS}}}options/{{{DNSMASQ_NS}}}option")]


def _add_broadcast_option(net: ET.Element) -> None:
    if broadcast_option() in _dnsmasq_options(net):
        return
    options = net.find(f"{{{DNSMASQ_NS}}}options")
    if options is None:
        options = ET.SubElement(net, f"{{{DNSMASQ_NS}}}options")
    ET.SubElement(options, f"{{{DNSMASQ_NS}}}option", value=broadcast_option())


def host_xml(mac: str, address: str, name: str) -> str:
    return ET.tostring(ET.Element("host", mac=mac, name=name, ip=address), encoding="unicode")


def check_network(xml_text: str, factory_name: str,
                  forward_dev: Optional[str] = None) -> Tuple[List[str], List[Tuple[str, ...]]]:
    """(structural problems, hosts whose name alone differs) of an existing definition."""
    try:
        net = ET.fromstring(xml_text)
    except ET.ParseError as e:
        return [f"unreadable XML: {e}"], []
    problems = []
    forward = net.find("forward")
    if forward is None or forward.get("mode") != "nat":
        problems.append("not a NAT network")
    elif (forward.get("dev") or None) != (forward_dev or None):
        problems.append(f"forward dev {forward.get('dev')!r} is not {forward_dev!r}")
    ips = {ip.get("address"): ip for ip in net.findall("ip")}
    bridge = ips.get(BRIDGE_ADDRESS)
    if bridge is None or not _mask_is(bridge, NETMASK, "16"):
        problems.append(f"no ip {BRIDGE_ADDRESS}/16")
    meta = ips.get(METADATA_ADDRESS)
    if meta is None or not _mask_is(meta, "255.255.255.255", "32"):
        problems.append(missing_metadata())
    if broadcast_option() not in _dnsmasq_options(net):
        problems.append(missing_broadcast())
    have: Dict[str, Tuple[str, str]] = {}
    if bridge is not None:
        for host in bridge.findall("dhcp/host"):
            have[(host.get("mac") or "").upper()] = (host.get("ip") or "", host.get("name") or "")
        if bridge.find("dhcp/range") is not None:
            problems.append("has a dynamic DHCP range")
    renamed = []
    for mac, address, name in dhcp_hosts(factory_name):
        if have.get(mac, ("",))[0] != address:
            problems.append(f"no DHCP host {mac} -> {address}")
            break
        if have[mac][1] != name:
            renamed.append((mac, address, name))
    return problems, renamed


def missing_metadata() -> str:
    """The problem check_network reports for a network without the metadata address (the
    original Vac's network)."""
    return f"no ip {METADATA_ADDRESS}/32"


def missing_broadcast() -> str:
    """The problem check_network reports for a network whose DHCP does not say the broadcast
    address (the original's, and this Vac's earlier ones)."""
    return (f"DHCP does not offer broadcast {broadcast_address()} (no dnsmasq "
            f"{broadcast_option()}): dhclient guests cannot reach {METADATA_ADDRESS}")


def completable(problems: List[str]) -> bool:
    """True if the network lacks only what can be added without redefining it."""
    return bool(problems) and set(problems) <= {missing_metadata(), missing_broadcast()}


def with_metadata_ip(xml_text: str) -> str:
    """The definition with the metadata address (replacing a wrong one) and the broadcast
    option added."""
    net = ET.fromstring(xml_text)
    for ip in net.findall("ip"):
        if ip.get("address") == METADATA_ADDRESS:
            net.remove(ip)
    ET.SubElement(net, "ip", address=METADATA_ADDRESS, prefix="32")
    _add_broadcast_option(net)
    return ET.tostring(net, encoding="unicode")


def _mask_is(ip: ET.Element, netmask: str, prefix: str) -> bool:
    return ip.get("netmask") == netmask or ip.get("prefix") == prefix


def ensure_network(conn: Any, factory_name: str, forward_dev: Optional[str] = None) -> None:
    """Make the network exist as defined, persistent, active and autostarted.

    Args:
        conn: an open libvirt connection.

    Raises:
        BackendError: libvirt refused; the message says what to look at.
    """
    import libvirt

    try:
        net = _lookup(conn, libvirt)
        if net is not None:
            problems, renamed = check_network(net.XMLDesc(0), factory_name, forward_dev)
            if completable(problems):
                net = _complete(conn, net, libvirt)
            elif problems:
                _redefine_if_idle(conn, net, problems, libvirt)
                net = None
            else:
                _rename_hosts(conn, net, factory_name, forward_dev, bool(renamed), libvirt)
        if net is None or not net.isPersistent():
            log.info("defining libvirt network %s", NETWORK_NAME)
            net = conn.networkDefineXML(network_xml(factory_name, forward_dev))
        if not net.isActive():
            log.info("starting libvirt network %s", NETWORK_NAME)
            try:
                net.create()
            except libvirt.libvirtError as e:
                raise BackendError("libvirt", f"cannot start network {NETWORK_NAME}: "
                                   f"{e.get_error_message()}; {HINTS}") from e
        if not net.autostart():
            net.setAutostart(1)
    except libvirt.libvirtError as e:
        raise BackendError("libvirt", f"network {NETWORK_NAME}: {e.get_error_message()}") from e


def _redefine_if_idle(conn: Any, net: Any, problems: List[str], libvirt: Any) -> None:
    """Remove a network that is not as Vac defines it (it is then defined anew), unless a
    running domain uses it: BackendError (new VMs wait; running ones keep their network)."""
    if net.isActive() and _in_use(conn, libvirt):
        raise BackendError("libvirt", f"network {NETWORK_NAME} is not as Vac defines it "
                           f"({'; '.join(problems)}); left alone while running VMs use it")
    log.warning("network %s is not as Vac defines it (%s); redefining it",
                NETWORK_NAME, "; ".join(problems))
    _remove(net)


def _complete(conn: Any, net: Any, libvirt: Any) -> Any:
    """A network lacking the metadata address or the broadcast option (the original's): add
    them to the definition, and live the address without a broadcast to the running bridge;
    restart on the new definition when no VM uses the network. Returns the network (None if
    it was removed to be defined anew)."""
    if not net.isPersistent():
        if net.isActive() and _in_use(conn, libvirt):
            fix_live_address(net.bridgeName())
            return net
        _remove(net)
        return None
    inactive = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
    if completable(check_network(inactive, "")[0]):
        log.info("adding %s and %s to the definition of network %s", METADATA_ADDRESS,
                 broadcast_option(), NETWORK_NAME)
        net = conn.networkDefineXML(with_metadata_ip(inactive))
    if not net.isActive():
        return net
    if _in_use(conn, libvirt):
        fix_live_address(net.bridgeName())
    else:
        log.info("restarting idle network %s on its completed definition", NETWORK_NAME)
        net.destroy()
    return net


def live_address_fix(shown: str) -> List[List[str]]:
    """The `ip` commands (arguments after `ip`) that leave METADATA_ADDRESS/32 on the bridge
    without a broadcast address, given `ip -o -4 addr show dev <bridge>`: none if it is so."""
    add = ["addr", "add", f"{METADATA_ADDRESS}/32", "dev"]
    for line in shown.splitlines():
        words = line.split()
        if f"{METADATA_ADDRESS}/32" not in words:
            continue
        if "brd" not in words:
            return []
        return [["addr", "del", f"{METADATA_ADDRESS}/32", "dev"], add]
    return [add]


def fix_live_address(bridge: str) -> None:
    """Put METADATA_ADDRESS/32 on the running bridge without a broadcast address (libvirt gives
    it `brd 169.254.169.254`, which the running dnsmasq would offer to DHCP clients)."""
    try:
        shown = subp.run(["ip", "-o", "-4", "addr", "show", "dev", bridge], timeout=10).stdout
        commands = live_address_fix(shown)
        for args in commands:
            subp.run(["ip"] + args + [bridge], timeout=10)
    except ProcessError as e:
        raise BackendError("libvirt", f"cannot put {METADATA_ADDRESS} without a broadcast "
                           f"address on bridge {bridge} of network {NETWORK_NAME}, which "
                           f"running VMs use: {e}") from e
    if commands:
        log.info("put %s without a broadcast address on the running bridge %s of network %s "
                 "(VMs use it: no restart)", METADATA_ADDRESS, bridge, NETWORK_NAME)


def _lookup(conn: Any, libvirt: Any) -> Any:
    try:
        return conn.networkLookupByName(NETWORK_NAME)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise


def _remove(net: Any) -> None:
    if net.isActive():
        net.destroy()
    if net.isPersistent():
        net.undefine()


def _rename_hosts(conn: Any, net: Any, factory_name: str, forward_dev: Optional[str],
                  live_renamed: bool, libvirt: Any) -> None:
    """Give the DHCP hosts this factory's names: in the definition at once (cheap), and live
    by restarting the network as soon as no running domain uses it (a live update costs
    about 0.5 s per host)."""
    if net.isPersistent():
        inactive = net.XMLDesc(libvirt.VIR_NETWORK_XML_INACTIVE)
        _, pending = check_network(inactive, factory_name, forward_dev)
        for mac, address, name in pending:
            net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_MODIFY,
                       libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, 0,
                       host_xml(mac, address, name), libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG)
        if pending:
            log.info("renamed %d DHCP hosts of network %s for %s", len(pending), NETWORK_NAME,
                     factory_name)
    if not live_renamed or not net.isPersistent() or not net.isActive():
        return
    if not _in_use(conn, libvirt):
        log.info("restarting idle network %s to use the new DHCP host names", NETWORK_NAME)
        net.destroy()
    else:
        log.debug("network %s in use: DHCP host names change when it is next idle",
                  NETWORK_NAME)


def _in_use(conn: Any, libvirt: Any) -> bool:
    """True if any running domain has an interface on the network."""
    for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
        try:
            root = ET.fromstring(dom.XMLDesc(0))
        except (libvirt.libvirtError, ET.ParseError):
            return True          # cannot tell: assume it is
        for source in root.findall("devices/interface/source"):
            if source.get("network") == NETWORK_NAME:
                return True
    return False


def nwfilter_exists(conn: Any, name: str) -> bool:
    """True if libvirt has the named network filter (e.g. clean-traffic)."""
    import libvirt

    try:
        conn.nwfilterLookupByName(name)
        return True
    except libvirt.libvirtError:
        return False
