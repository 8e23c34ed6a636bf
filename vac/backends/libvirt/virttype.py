"""Which libvirt domain type a host runs its VMs as: kvm where it is usable and safe, else
qemu (TCG), for libvirt_virt_type = auto | kvm | qemu."""
from __future__ import annotations

import os
from typing import Tuple

CPUINFO = "/proc/cpuinfo"
KVM_DEVICE = "/dev/kvm"


def choose_virt_type(setting: str, libvirt_has_kvm: bool, kvm_usable: bool,
                     under_hypervisor: bool) -> Tuple[str, str]:
    """(domain type, why) for libvirt_virt_type = auto | kvm | qemu (pure)."""
    if setting in ("kvm", "qemu"):
        return setting, f"libvirt_virt_type = {setting}"
    if not libvirt_has_kvm:
        return "qemu", "libvirt offers no kvm domains here"
    if not kvm_usable:
        return "qemu", f"{KVM_DEVICE} is missing or not usable"
    if under_hypervisor:
        return "qemu", ("this host is itself a virtual machine (CPU flag 'hypervisor'), where "
                        "nested KVM is known to hang guests; set libvirt_virt_type = kvm to "
                        "override")
    return "kvm", f"{KVM_DEVICE} is usable and this host is not a virtual machine"


def host_kvm_facts() -> Tuple[bool, bool]:
    """(/dev/kvm usable, host has the 'hypervisor' CPU flag)."""
    usable = os.path.exists(KVM_DEVICE) and os.access(KVM_DEVICE, os.R_OK | os.W_OK)
    nested = False
    try:
        with open(CPUINFO) as f:
            for line in f:
                if line.startswith("flags"):
                    nested = "hypervisor" in line.split(":", 1)[-1].split()
                    break
    except OSError:
        pass
    return usable, nested
