# SPDX-License-Identifier: BSD-2-Clause
"""The libvirt domain XML of a VM: its disks and parameters, rendered from the domain template.

vac.backends.libvirt.backend decides the values (domain type, disks, slot MAC/IP/VNC port,
kernel boot) and hands them over as a DomainParams; templates/libvirt-domain.xml.j2 is rendered
with autoescape and StrictUndefined, so a value can never add XML of its own.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

from vac.backends.libvirt import network as vmnetwork
from vac.errors import BackendError

NWFILTER = "clean-traffic"
TEMPLATE = "libvirt-domain.xml.j2"
TEMPLATES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
# A site may override a template by putting its own copy here (searched first).
SITE_TEMPLATES_DIR = "/etc/vac/templates"

_jinja_env = None


@dataclass(frozen=True)
class Disk:
    """One <disk> of the domain."""

    source: str
    target: str
    device: str = "disk"        # disk | cdrom
    kind: str = "file"          # file | block
    format: str = "raw"         # raw | qcow2
    readonly: bool = False

    @property
    def bus(self) -> str:
        """virtio if the device name contains "vd", else ide (the original's rule)."""
        return "virtio" if "vd" in self.target else "ide"


@dataclass(frozen=True)
class DomainParams:
    """Every value the domain template uses."""

    virt_type: str
    name: str
    uuid: str
    memory_mb: int
    vcpus: int
    mac: str
    ip: str
    vnc_port: int
    console_log: str
    disks: Tuple[Disk, ...] = ()
    boot_dev: str = "hd"
    kernel: Optional[str] = None
    initrd: Optional[str] = None
    cmdline: Optional[str] = None
    nwfilter: Optional[str] = NWFILTER
    network: str = vmnetwork.NETWORK_NAME
    smbios_product: Optional[str] = None    # the machinetype's smbios_product


def render_domain_xml(params: DomainParams) -> str:
    """The domain XML (Jinja2 with autoescape and StrictUndefined)."""
    global _jinja_env
    if _jinja_env is None:
        import jinja2

        loader = jinja2.FileSystemLoader([SITE_TEMPLATES_DIR, TEMPLATES_DIR])
        _jinja_env = jinja2.Environment(loader=loader, autoescape=True,
                                        undefined=jinja2.StrictUndefined,
                                        keep_trailing_newline=True)
    values = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    values["disks"] = [dict(dataclasses.asdict(d), bus=d.bus) for d in params.disks]
    return _jinja_env.get_template(TEMPLATE).render(**values)


def config_drive_target(used: List[str]) -> str:
    """The first virtio disk name not used by the machine's other disks."""
    for letter in "bcdefghijklmnopqrstuvwxyz":
        if f"vd{letter}" not in used:
            return f"vd{letter}"
    raise BackendError("libvirt", "no free virtio disk name for the config drive")

