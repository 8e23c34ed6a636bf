# SPDX-License-Identifier: BSD-2-Clause
"""The libvirt domain XML, the domain-type decision and the console joboutputs (no libvirtd)."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import jinja2
import pytest

from vac.backends.libvirt import backend as lv
from vac.backends.libvirt import domainxml as libvirtxml
from vac.backends.libvirt import virttype
from vac.backends.libvirt.backend import Disk, DomainParams, render_domain_xml
from vac.machine.directory import MachineDir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _params(**kw):
    base = dict(virt_type="qemu", name="f1-05.example.com",
                uuid="0e8b2cb5-1f5c-4d47-9f8e-6f0d6c3a1b05", memory_mb=2048, vcpus=2,
                mac="56:4D:A9:FE:A9:05", ip="169.254.169.5", vnc_port=5905,
                console_log="/var/lib/vac/machines/1_t_f1-05.example.com/console.log")
    base.update(kw)
    return DomainParams(**base)


def _dom(**kw):
    return ET.fromstring(render_domain_xml(_params(**kw)))


def test_domain_essentials():
    dom = _dom(disks=(Disk("/tmp/root.disk.x", "vda", format="qcow2"),))
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "f1-05.example.com"
    assert dom.findtext("uuid") == "0e8b2cb5-1f5c-4d47-9f8e-6f0d6c3a1b05"
    assert dom.find("memory").get("unit") == "MiB" and dom.findtext("memory") == "2048"
    assert dom.findtext("currentMemory") == "2048"
    assert dom.findtext("vcpu") == "2"
    assert [e.tag for e in dom.find("features")] == ["acpi", "apic", "pae"]
    for event in ("on_poweroff", "on_reboot", "on_crash"):
        assert dom.findtext(event) == "destroy"
    assert dom.find("cpu") is None                      # no host-passthrough under TCG
    nic = dom.find("devices/interface")
    assert nic.get("type") == "network"
    assert nic.find("source").get("network") == "vac_169.254.0.0"
    assert nic.find("mac").get("address") == "56:4D:A9:FE:A9:05"
    assert nic.find("model").get("type") == "virtio"
    assert nic.find("filterref").get("filter") == "clean-traffic"
    assert nic.find("filterref/parameter").attrib == {"name": "IP", "value": "169.254.169.5"}
    serial = dom.find("devices/serial")
    assert serial.get("type") == "file"
    assert serial.find("source").get("path").endswith("/console.log")
    vnc = dom.find("devices/graphics")
    assert (vnc.get("port"), vnc.get("listen"), vnc.get("autoport")) == \
        ("5905", "127.0.0.1", "no")
    assert dom.find("os/boot").get("dev") == "hd"
    assert dom.find("os/kernel") is None


def test_kvm_gets_host_passthrough():
    dom = _dom(virt_type="kvm")
    assert dom.get("type") == "kvm"
    assert dom.find("cpu").get("mode") == "host-passthrough"


def test_direct_kernel_boot():
    dom = _dom(kernel="/k/vmlinuz", initrd="/k/initrd.img", cmdline="console=ttyS0 quiet")
    assert dom.findtext("os/kernel") == "/k/vmlinuz"
    assert dom.findtext("os/initrd") == "/k/initrd.img"
    assert dom.findtext("os/cmdline") == "console=ttyS0 quiet"
    assert dom.find("os/boot") is None


def test_disks_buses_kinds_and_readonly():
    disks = (Disk("/img/cernvm.iso", "hdc", device="cdrom", readonly=True),
             Disk("/dev/vg/f1-05.example.com", "vda", kind="block"),
             Disk("/m/config-drive.iso", "vdb", readonly=True))
    found = _dom(disks=disks, boot_dev="cdrom").findall("devices/disk")
    assert [(d.get("type"), d.get("device")) for d in found] == \
        [("file", "cdrom"), ("block", "disk"), ("file", "disk")]
    assert [d.find("target").get("bus") for d in found] == ["ide", "virtio", "virtio"]
    assert found[1].find("source").get("dev") == "/dev/vg/f1-05.example.com"
    assert found[0].find("source").get("file") == "/img/cernvm.iso"
    assert [d.find("readonly") is not None for d in found] == [True, False, True]
    assert {d.find("driver").get("cache") for d in found} == {"unsafe"}


def test_no_filter_when_libvirt_lacks_it():
    assert _dom(nwfilter=None).find("devices/interface/filterref") is None


@pytest.mark.parametrize("evil", ["a'b", 'a"b', "a<b>&c", "x</name><devices/>"])
def test_values_are_escaped(evil):
    dom = _dom(name=evil, cmdline=evil, kernel="/k/v", console_log=f"/m/{evil}/console.log",
               disks=(Disk(f"/tmp/{evil}", "vda"),))
    assert dom.findtext("name") == evil
    assert dom.findtext("os/cmdline") == evil
    assert dom.find("devices/disk/source").get("file") == f"/tmp/{evil}"
    assert dom.find("devices/serial/source").get("path") == f"/m/{evil}/console.log"
    assert len(dom.findall("devices")) == 1


def test_template_is_strict_about_missing_values():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(libvirtxml.TEMPLATES_DIR),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    with pytest.raises(jinja2.UndefinedError):
        env.get_template(libvirtxml.TEMPLATE).render(virt_type="qemu", name="x")
    assert libvirtxml._jinja_env is None or \
        libvirtxml._jinja_env.undefined is jinja2.StrictUndefined


@pytest.mark.parametrize("setting,has_kvm,usable,nested,expected", [
    ("kvm", False, False, True, "kvm"),
    ("qemu", True, True, False, "qemu"),
    ("auto", True, True, False, "kvm"),
    ("auto", True, True, True, "qemu"),       # nested: KVM hangs guests here
    ("auto", True, False, False, "qemu"),
    ("auto", False, True, False, "qemu"),
])
def test_choose_virt_type(setting, has_kvm, usable, nested, expected):
    chosen, why = virttype.choose_virt_type(setting, has_kvm, usable, nested)
    assert chosen == expected and why


def test_config_drive_target_avoids_used_names():
    assert lv.config_drive_target(["vda"]) == "vdb"
    assert lv.config_drive_target(["hdc", "vda"]) == "vdb"
    assert lv.config_drive_target(["vda", "vdb"]) == "vdc"
    assert lv.config_drive_target([]) == "vdb"


def test_console_joboutputs_are_collected(paths):
    d = MachineDir.create(paths, 1700000000, "t", "f1-05.example.com")
    d.write("joboutputs/already", "from PUT")
    with open(d.file("console.log"), "wb") as f:
        f.write(b"SeaBIOS\r\nVAC-GUEST: payload exit 0\r\n"
                b"VAC-JOBOUTPUT shutdown_message MTAwIHRlc3Qgb2sK\r\n"
                b"VAC-JOBOUTPUT empty \r\n"
                b"VAC-JOBOUTPUT already b3ZlcndyaXR0ZW4=\r\n"
                b"VAC-JOBOUTPUT ../escape aGk=\r\n"
                b"VAC-JOBOUTPUT bad !!!notbase64\r\n"
                b"VAC-JOBOUTPUTS-END\r\n")
    stored = lv.LibvirtBackend.console_joboutputs(d)
    assert sorted(stored) == ["empty", "shutdown_message"]
    assert d.shutdown_message == "100 test ok"
    assert d.read("joboutputs/empty") == ""
    assert d.read("joboutputs/already") == "from PUT"
    assert sorted(os.listdir(d.file("joboutputs"))) == ["already", "empty", "shutdown_message"]
    assert not os.path.exists(os.path.join(d.path, "escape"))


def test_console_tail_is_bounded(tmp_path):
    path = tmp_path / "console.log"
    path.write_bytes(b"x" * 5000 + b"\nVAC-JOBOUTPUT a aGk=\n")
    assert lv.read_console_tail(str(path), limit=100) == ["VAC-JOBOUTPUT a aGk=", ""]
    assert lv.read_console_tail(str(tmp_path / "absent")) == []


def test_without_libvirt_python_probe_says_what_to_install():
    code = ("import sys, types; sys.modules['libvirt'] = None\n"
            "from vac.backends import get_backend_class\n"
            "cls = get_backend_class('libvirt')\n"
            "probe = cls(types.SimpleNamespace(libvirt_uri='qemu:///system')).probe()\n"
            "print(probe.available, probe.reason)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("False ") and "libvirt-python" in out.stdout


def test_capabilities():
    assert lv.LibvirtBackend.NAME == "libvirt"
    assert lv.LibvirtBackend.MODELS == {"cernvm3", "cernvm4", "vm-raw"}
    caps = lv.LibvirtBackend.CAPABILITIES
    assert caps.machinefeatures_url == "http://169.254.169.253/machinefeatures"
    assert caps.jobfeatures_url == "http://169.254.169.253/jobfeatures"
    assert caps.joboutputs_url == "http://169.254.169.253/joboutputs"
    assert caps.needs_metadata_server


@pytest.mark.parametrize("state, expected", [
    ("VIR_DOMAIN_RUNNING", "RUNNING"), ("VIR_DOMAIN_BLOCKED", "RUNNING"),
    ("VIR_DOMAIN_NOSTATE", "RUNNING"),
    ("VIR_DOMAIN_SHUTDOWN", "RUNNING"),        # powering off: not a paused machine to destroy
    ("VIR_DOMAIN_PAUSED", "PAUSED"), ("VIR_DOMAIN_PMSUSPENDED", "PAUSED"),
    ("VIR_DOMAIN_SHUTOFF", "SHUTDOWN"), ("VIR_DOMAIN_CRASHED", "SHUTDOWN"),
])
def test_domain_states_map_to_machine_states(state, expected):
    libvirt = pytest.importorskip("libvirt")
    from vac.machine.directory import MachineState

    class Dom:
        def info(self):
            return [getattr(libvirt, state), 262144, 262144, 1, 2_500_000_000]

        def UUIDString(self):
            return "0e8b2cb5-1f5c-4d47-9f8e-6f0d6c3a1b05"

    status = lv.LibvirtBackend(None)._status_of("f1-05.example.com", Dom())
    assert status.state == MachineState[expected]
    assert status.cpu_seconds == 2.5 and status.backend_id.startswith("0e8b2cb5")


def test_site_template_overrides_the_packaged_one(tmp_path, monkeypatch):
    site = tmp_path / "templates"
    site.mkdir()
    (site / libvirtxml.TEMPLATE).write_text("<domain name='{{ name }}'/>\n")
    monkeypatch.setattr(libvirtxml, "SITE_TEMPLATES_DIR", str(site))
    monkeypatch.setattr(libvirtxml, "_jinja_env", None)
    assert render_domain_xml(_params(name="a<b")) == "<domain name='a&lt;b'/>\n"
    monkeypatch.setattr(libvirtxml, "SITE_TEMPLATES_DIR", str(tmp_path / "absent"))
    monkeypatch.setattr(libvirtxml, "_jinja_env", None)
    assert render_domain_xml(_params()).startswith("<domain type=")
