# SPDX-License-Identifier: BSD-2-Clause
"""Where a running VM's processes are in the cgroup tree: its machine cgroup.

libvirt's QEMU driver (qemu:///system) writes the QEMU process's pid to
/run/libvirt/qemu/<domain name>.pid and gives the VM a cgroup of its own: with systemd, a
scope systemd-machined makes under machine.slice (/machine.slice/machine-qemu\\x2d<id>\\x2d
<name>.scope); without it, /machine/qemu-<id>-<name>.libvirt-qemu. The emulator and vCPU
threads are in cgroups below it (.../libvirt/emulator, .../emulator, .../vcpu0). That cgroup
holds everything of the VM, so its pressure files are the VM's.

The cgroup is read from the QEMU process's /proc/<pid>/cgroup (the 0:: line) rather than
rebuilt from libvirt's naming rules, which have changed between releases. The pid file is
libvirt's (root's), but what it says is checked: a pid whose cgroup is not a VM's
gives None.
"""
from __future__ import annotations

import os
from typing import Optional

from vac import fsutil
from vac.host import procs

PID_DIR = "/run/libvirt/qemu"
PID_LIMIT = 64


def scope_of(process_path: str) -> Optional[str]:
    """The VM's cgroup at or above a process's cgroup path (/machine.slice/machine-x.scope
    from /machine.slice/machine-x.scope/libvirt/emulator, /machine/qemu-1-x.libvirt-qemu from
    /machine/qemu-1-x.libvirt-qemu/emulator), or None if there is none."""
    parts = process_path.split("/")
    for i, part in enumerate(parts):
        if i > 0 and ((part.startswith("machine-") and part.endswith(".scope")) or
                      (part.startswith("qemu-") and part.endswith(".libvirt-qemu"))):
            return "/".join(parts[:i + 1])
    return None


def qemu_pid(name: str, pid_dir: str = PID_DIR) -> Optional[int]:
    """The pid libvirt's pid file names for the running domain `name`, or None (no pid file,
    or not a pid). Never raises."""
    if not name or "/" in name or name.startswith("."):
        return None
    try:
        text = fsutil.read_optional(os.path.join(pid_dir, f"{name}.pid"), PID_LIMIT)
    except OSError:
        return None
    word = (text or "").strip()
    return int(word) if word.isdigit() and int(word) > 0 else None


def cgroup_path(name: str, pid_dir: str = PID_DIR, proc_root: str = "/proc") -> Optional[str]:
    """The running domain `name`'s machine scope (as /proc/<pid>/cgroup names it), or None
    (no pid file, the process gone, or not in a machine scope). Never raises."""
    pid = qemu_pid(name, pid_dir)
    if pid is None:
        return None
    path = procs.cgroups_of(pid, proc_root).get("")
    return scope_of(path) if path else None
