# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the libvirt backend: each machinetype's root_image, the VMs' NAT
network as Vac defines it, /dev/kvm (or QEMU's emulation), whether the QEMU user can reach the
VM disks and images, and the metadata service's ports. Never raises: every failure is a line.
"""
from __future__ import annotations

import fcntl
import os
from typing import List, Sequence, Tuple

from vac.backends.checks import FAIL, OK, WARN, BackendChecks, Check, file_image, one_line
from vac.backends.libvirt.network import NETWORK_NAME, check_network
from vac.backends.libvirt.services import DEFAULT_ADDRESSES, DEFAULT_PORT
from vac.config.model import MachineType, Settings
from vac.host import access

ENGINE_FIX = "start libvirtd (systemctl start libvirtd) or set libvirt_uri"
KVM_GET_API_VERSION = 0xAE00
KVM_CREATE_VM = 0xAE01


class LibvirtChecks(BackendChecks):
    """Images are files or URLs; the NAT network is asked of libvirt when it answers."""

    ENGINE_FIX = ENGINE_FIX

    def lines(self, machinetypes: List[MachineType], usable: bool) -> List[Check]:
        found = [file_image(mt, self.settings) for mt in machinetypes]
        if usable:
            found.append(nat_network(self.settings))
        return found + required_kvm(self.settings) + \
            qemu_traversal(self.settings, local_image_paths(machinetypes))

    def listeners(self) -> List[Tuple[str, str, int]]:
        return [("metadata-port", address, DEFAULT_PORT) for address in DEFAULT_ADDRESSES]


def local_image_paths(machinetypes: List[MachineType]) -> List[str]:
    """The local image files of VM machinetypes (the QEMU user must reach them too)."""
    return [mt.files_path(mt.root_image) for mt in machinetypes
            if mt.root_image and not mt.root_image.startswith(("https://", "http://"))]


def nat_network(settings: Settings) -> Check:
    """The VMs' libvirt NAT network: defined, active and as Vac defines it (with the DHCP
    broadcast option the metadata address needs), or vacd will define or complete it."""
    try:
        import libvirt

        conn = libvirt.open(settings.libvirt_uri)
    except Exception as e:  # noqa: BLE001 (the engine check gives the fix)
        return Check("nat-network", WARN, f"cannot ask libvirt: {one_line(e)}")
    try:
        try:
            net = conn.networkLookupByName(NETWORK_NAME)
        except libvirt.libvirtError:
            net = None
        if net is not None and net.isActive():
            problems = check_network(net.XMLDesc(0), settings.factory_name,
                                     settings.forward_dev)[0]
            if problems:
                return Check("nat-network", WARN, f"{NETWORK_NAME} active on "
                             f"{net.bridgeName()} but {'; '.join(problems)}",
                             "vacd completes or redefines it before it creates VMs (a network "
                             "that running VMs use is completed live or left alone)")
            return Check("nat-network", OK, f"{NETWORK_NAME} active on {net.bridgeName()}")
        found = f"{NETWORK_NAME} {'inactive' if net is not None else 'not defined'}"
        if settings.fix_networking:
            return Check("nat-network", WARN, f"{found}; vacd defines and starts it each cycle")
        return Check("nat-network", FAIL, f"{found} and fix_networking = false",
                     f"virsh net-start {NETWORK_NAME}, or remove fix_networking = false")
    finally:
        conn.close()


def kvm(path: str = "/dev/kvm") -> List[Check]:
    """Is /dev/kvm usable (a VM can be created), else QEMU's emulation is the fallback."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return [Check("kvm", WARN, f"{path}: {e.strerror}: VMs will run under QEMU's "
                      "emulation (TCG), many times slower",
                      "enable virtualisation in the firmware (or nested virtualisation on the "
                      "hypervisor) and load kvm_intel or kvm_amd")]
    try:
        version = fcntl.ioctl(fd, KVM_GET_API_VERSION)
        vm_fd = fcntl.ioctl(fd, KVM_CREATE_VM, 0)
        os.close(vm_fd)
    except OSError as e:
        return [Check("kvm", WARN, f"{path} opens but cannot create a VM ({e.strerror}): "
                      "VMs will run under QEMU's emulation", "enable nested virtualisation")]
    finally:
        os.close(fd)
    return [Check("kvm", OK, f"{path} usable (KVM API {version})")]


def required_kvm(settings: Settings, path: str = "/dev/kvm") -> List[Check]:
    """The kvm line, a failure when libvirt_virt_type = kvm leaves no emulation to fall back to."""
    found = kvm(path)
    if found[0].status != OK and settings.libvirt_virt_type == "kvm":
        return [Check("kvm", FAIL, found[0].detail.split(":", 1)[0] + " is not usable and "
                      "libvirt_virt_type = kvm", "libvirt_virt_type = auto, or " + found[0].fix)]
    return found


def qemu_traversal(settings: Settings, extra: Sequence[str] = (),
                   conf_path: str = access.QEMU_CONF) -> List[Check]:
    """Can the QEMU user reach the VM disks under the state directory (and the images)?"""
    user = access.qemu_user(conf_path)
    if user is None:
        return [Check("qemu-user", WARN, f"no QEMU user found ({conf_path}: user, or "
                      f"{' / '.join(access.QEMU_USERS)})", "install libvirt-daemon-driver-qemu")]
    paths = [settings.state_dir, os.path.join(settings.state_dir, "machines"),
             os.path.join(settings.state_dir, "tmp"), *extra]
    found = access.barrier_for(user, paths)
    if found is not None:
        path, why = found
        detail, fix = why.split("; fix: ", 1)
        return [Check("qemu-traversal", FAIL, f"{detail}, so every VM creation fails with "
                      f"QEMU's \"Permission denied\" on its disk under {path}", fix)]
    return [Check("qemu-traversal", OK, f"the QEMU user {user.pw_name} can reach "
                  f"{settings.state_dir} and the VM images")]


CHECKS = LibvirtChecks
