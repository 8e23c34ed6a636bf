# SPDX-License-Identifier: BSD-2-Clause
"""A machinetype's smbios_product reaches QEMU: the domain Vac renders starts on the
real libvirtd and its QEMU gets `-smbios type=1,product=...`, which the guest reads as
/sys/class/dmi/id/product_name (cloud-init's ds-identify: "OpenStack Nova" -> OpenStack).
The domain has no disk and no interface (it idles in its BIOS; the factory network is others').
About 3 s.
"""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest
from testbed import require_engine

from vac.backends.libvirt.domainxml import DomainParams, render_domain_xml

pytestmark = [pytest.mark.libvirt]


def test_smbios_product_reaches_qemu(tmp_path):
    try:
        import libvirt
        conn = libvirt.open("qemu:///system")
    except Exception as e:  # no libvirt here
        require_engine("libvirt", False, f"{type(e).__name__}: {e}")
        return
    name = f"vacsmbios-{uuid.uuid4().hex[:8]}"
    xml = ET.fromstring(render_domain_xml(DomainParams(
        virt_type="qemu", name=name, uuid=str(uuid.uuid4()), memory_mb=64, vcpus=1,
        mac="56:4D:A9:FE:A9:63", ip="169.254.169.99", vnc_port=5999,
        console_log=str(tmp_path / "console.log"), nwfilter=None,
        smbios_product="OpenStack Nova")))
    devices = xml.find("devices")
    for unwanted in devices.findall("interface") + devices.findall("graphics"):
        devices.remove(unwanted)
    tmp_path.chmod(0o755)
    dom = conn.createXML(ET.tostring(xml, encoding="unicode"), 0)
    try:
        with open(f"/run/libvirt/qemu/{name}.pid") as f:
            pid = f.read().strip()
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert b"-smbios" in argv
        assert argv[argv.index(b"-smbios") + 1] == b"type=1,product=OpenStack Nova"
    finally:
        dom.destroy()
        conn.close()
