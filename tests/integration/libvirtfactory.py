# SPDX-License-Identifier: BSD-2-Clause
"""A factory of its own on the real libvirtd + QEMU, driven cycle by cycle by the tests,
booting the Vac test guest from its kernel + initrd.

Each LibvirtFactory has a factory_name of its own (slot names never collide with other tests'),
keeps its files in a directory under /var/tmp (QEMU, running as libvirt-qemu, must reach them),
and cleanup() destroys every domain of its factory. engine_problem() says why libvirt cannot be
used here ("" when it can).
"""
from __future__ import annotations

import dataclasses
import os
import time
import uuid as uuidlib
from typing import Dict, List, Optional

import pytest
from libvirt_env import GUEST, guest_problem

from vac.backends.libvirt.services import MetadataSupervisor
from vac.config import load
from vac.cycle.factory import CycleReport, Factory
from vac.host.facts import HostFacts, volume_group_exists
from vac.machine.directory import MachineDir
from vac.machine.slots import machine_name, ordinal_of

URI = "qemu:///system"
SPACE = "lvcycle.example.com"
MT = "guest"
# no_timer_check (the test guests' command lines all have it): under TCG on a busy host the
# kernel's boot-time check of the IO-APIC timer can miss its ticks and panic ("IO-APIC + timer
# doesn't work!"); cloud images boot their VMs with it.
CONSOLE = "console=ttyS0 quiet no_timer_check"
WAIT = 2           # libvirt_shutdown_wait_seconds: the guest ignores ACPI

CONF = """
[settings]
vac_space = {space}
factory_name = {factory}
state_dir = {state}
host_processors = {slots}
total_processors = {total}
overload_per_processor = 1000
mb_per_processor = 256
libvirt_uri = {uri}
libvirt_virt_type = auto
libvirt_shutdown_wait_seconds = {wait}
draining = {draining}

[machinetype {mt}]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = {cmdline}
user_data = {user_data}
target_share = 1
max_wallclock_seconds = {wallclock}
"""


def engine_problem() -> str:
    problem = guest_problem()
    if problem:
        return problem
    import libvirt

    try:
        libvirt.open(URI).close()
    except libvirt.libvirtError as e:
        return f"cannot connect to {URI}: {e.get_error_message()}"
    return ""


class LibvirtFactory:
    """One factory of its own on the real libvirtd, driven cycle by cycle."""

    def __init__(self, top: str):
        import libvirt

        self.top = top
        self.name = f"lv{uuidlib.uuid4().hex[:8]}.example.com"
        self.state = os.path.join(top, "state")
        self.user_data = os.path.join(top, "user_data")
        self.config_file = os.path.join(top, "vac.conf")
        self.host = HostFacts(fqdn=self.name, processors=1, uid_of=lambda _u: None,
                              vg_exists=lambda _v: False)
        self.supervisor: Optional[MetadataSupervisor] = None
        self.factory = Factory(self.load, after_prepare=self._after_prepare)
        self.conn = libvirt.open(URI)
        self.extra: List[str] = []       # other domains a test made

    def write(self, payload: str, cmdline: str = CONSOLE, uri: str = URI,
              draining: bool = False, wallclock: int = 3600, slots: int = 1,
              total: int = 1, disk_gb: Optional[int] = None,
              volume_group: Optional[str] = None, shutdown_time: Optional[int] = None) -> None:
        """The factory's user_data and vac.conf; disk_gb: the machinetype's
        disk_gb_per_processor (a vm-raw VM's scratch disk), none if None; volume_group: the
        VMs' disks are LVs of this real group (checked by LVM, as vacd does); shutdown_time:
        the site's, which ends every machine created to run past it."""
        with open(self.user_data, "w") as f:
            f.write(payload)
        text = CONF.format(space=SPACE, factory=self.name, state=self.state, slots=slots,
                           total=total, uri=uri, wait=WAIT, mt=MT, guest=GUEST,
                           draining="yes" if draining else "no", cmdline=cmdline,
                           user_data=self.user_data, wallclock=wallclock)
        if volume_group is not None:
            text = text.replace("[settings]\n", f"[settings]\nvolume_group = {volume_group}\n")
            self.host = dataclasses.replace(self.host, vg_exists=volume_group_exists)
        if shutdown_time is not None:
            text = text.replace("[settings]\n", f"[settings]\nshutdown_time = {shutdown_time}\n")
        with open(self.config_file, "w") as f:
            f.write(text)
            if disk_gb is not None:
                f.write(f"disk_gb_per_processor = {disk_gb}\n")

    def load(self):
        return load.build(load.read_raw([self.config_file]), self.host)

    def _after_prepare(self, config) -> List[str]:
        return self.supervisor.ensure(config) if self.supervisor is not None else []

    def cycle(self) -> CycleReport:
        return self.factory.run_cycle()

    def cycle_until_finished(self, *names: str, timeout: float = 120) -> List[CycleReport]:
        """Cycle about once a second, as vacd would, until every one of `names` is finished."""
        reports: List[CycleReport] = []
        waiting = set(names)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reports.append(self.cycle())
            waiting -= set(reports[-1].finished)
            if not waiting:
                return reports
            time.sleep(1)
        pytest.fail(f"{sorted(waiting)} not finished after {timeout} s: {reports[-1]}")

    def slot(self, n: int) -> str:
        return machine_name(self.name, n)

    def dir(self, name: str) -> MachineDir:
        d = MachineDir.for_slot(self.load().settings.paths, name)
        assert d is not None, f"{name} has no machine directory"
        return d

    def connection(self):
        """The test's own connection to libvirtd, opened again when a call on it has failed."""
        import libvirt

        if self.conn is None:
            self.conn = libvirt.open(URI)
        return self.conn

    def list_domains(self) -> List[object]:
        """Every domain libvirtd has. Once a test in this process has run a libvirt watcher,
        virEventRegisterDefaultImpl has been called, so libvirtd pings each later connection
        for keepalive; with no event loop running, a connection left idle for 30 s (5 pings
        unanswered) is closed by libvirtd, and the next call fails with "Cannot write data:
        Broken pipe" while isAlive() still says 1. Such a call is made once more on a new
        connection."""
        import libvirt

        try:
            return self.connection().listAllDomains(0)
        except libvirt.libvirtError:
            try:
                self.conn.close()
            except libvirt.libvirtError:
                pass
            self.conn = None
            return self.connection().listAllDomains(0)

    def domains(self) -> Dict[str, object]:
        """This factory's domains, by name."""
        return {dom.name(): dom for dom in self.list_domains()
                if ordinal_of(self.name, dom.name()) >= 0}

    def domain_uuid(self, name: str) -> Optional[str]:
        dom = self.domains().get(name)
        return dom.UUIDString() if dom is not None else None

    def console(self, name: str) -> str:
        return self.dir(name).read("console.log", 1 << 20) or ""

    def cleanup(self) -> None:
        if self.supervisor is not None:
            self.supervisor.close()
        for dom in self.list_domains():
            if ordinal_of(self.name, dom.name()) >= 0 or dom.name() in self.extra:
                try:
                    dom.destroy()
                except Exception:  # noqa: BLE001 (already gone)
                    pass
        self.conn.close()
