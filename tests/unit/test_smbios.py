# SPDX-License-Identifier: BSD-2-Clause
"""smbios_product: the VMs' SMBIOS system product name, e.g. "OpenStack Nova", from
which cloud-init's ds-identify finds the OpenStack datasource."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from vac.backends.libvirt.backend import DomainParams, render_domain_xml

SETTINGS = "[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
VM = "[machinetype vm]\nmachine_model = vm-raw\nroot_image = /x.img\ntarget_share = 1\n"


def _dom(**kw) -> ET.Element:
    return ET.fromstring(render_domain_xml(DomainParams(
        virt_type="qemu", name="f1-05.example.com", uuid="0e8b2cb5-1f5c-4d47-9f8e-6f0d6c3a1b05",
        memory_mb=512, vcpus=1, mac="56:4D:A9:FE:A9:05", ip="169.254.169.5", vnc_port=5905,
        console_log="/tmp/console.log", **kw)))


def test_the_product_name_goes_into_sysinfo_and_is_used():
    dom = _dom(smbios_product="OpenStack Nova")
    assert dom.find("os/smbios").get("mode") == "sysinfo"
    assert dom.find("sysinfo").get("type") == "smbios"
    entries = dom.findall("sysinfo/system/entry")
    assert [(e.get("name"), e.text) for e in entries] == [("product", "OpenStack Nova")]


def test_unset_leaves_qemus_own():
    dom = _dom()
    assert dom.find("sysinfo") is None and dom.find("os/smbios") is None


def test_a_product_is_escaped():
    dom = _dom(smbios_product="a</entry><x y='1'>")
    assert dom.find("sysinfo/system/entry").text == "a</entry><x y='1'>"


def test_configured_per_machinetype(make_config):
    conf = make_config(SETTINGS + VM + "smbios_product = OpenStack Nova\n")
    assert conf.machinetypes["vm"].smbios_product == "OpenStack Nova"
    assert make_config(SETTINGS + VM).machinetypes["vm"].smbios_product is None


def test_a_bad_product_skips_the_machinetype_and_says_where(make_config):
    conf = make_config(SETTINGS + VM + "smbios_product = " + "x" * 65 + "\n")
    assert "vm" not in conf.machinetypes
    assert any("smbios_product" in w and "64 printable" in w for w in conf.warnings)
