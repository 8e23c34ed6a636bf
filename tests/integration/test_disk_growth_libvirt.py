# SPDX-License-Identifier: BSD-2-Clause
"""A running VM's disk files as admission by free disk space counts them, on a real libvirtd
+ QEMU booting the Vac test guest: a vm-raw VM with a qcow2 overlay over its image and a sparse
scratch disk (disk_gb_per_processor), both unlinked once QEMU holds them, is found by
LibvirtBackend.disk_growth() through QEMU's open files, each with the size it may reach (the
overlay's virtual size, the scratch file's apparent size) and what is allocated now (growing as
the guest writes); a reading counts their room on the state directory's filesystem under
"libvirt disk files"; once the VM is destroyed it has none."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid as uuidlib

import pytest
from libvirt_env import GUEST, guest_problem
from testbed import require_engine
from waiting import wait_until

from vac.backends.base import ROOT_DISK, SCRATCH_DISK, MachineSpec
from vac.config import load
from vac.cycle import hostdisk
from vac.host import diskspace
from vac.host.facts import HostFacts
from vac.machine import scratch
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name, ordinal_of
from vac.paths import Paths

pytestmark = pytest.mark.libvirt

GB = 10 ** 9
MIB = 1024 * 1024
FACTORY = "q8grow.example.com"
CONF = """
[settings]
vac_space = space.example.com
factory_name = {factory}
state_dir = {state}
mb_per_processor = 256
libvirt_virt_type = auto

[machinetype grow]
machine_model = vm-raw
root_image = disk.img
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet no_timer_check
disk_gb_per_processor = 2
"""
WRITE = ("#!/bin/sh\n"
         "dd if=/dev/urandom of=/dev/vdb bs=1M count=24 conv=fsync 2>/dev/null\n"
         "sleep 600\n")


@pytest.fixture
def lab(tmp_path):
    from vac.backends.libvirt.backend import LibvirtBackend

    problem = guest_problem()
    require_engine("libvirt", not problem, problem)
    top = tempfile.mkdtemp(prefix="vac-grow-test-", dir="/var/tmp")
    os.chmod(top, 0o755)           # QEMU runs as libvirt-qemu and must reach the files
    paths = Paths(os.path.join(top, "state"))
    paths.ensure()
    conf = os.path.join(top, "vac.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(factory=FACTORY, state=paths.state_dir, guest=GUEST))
    host = HostFacts(fqdn=FACTORY, processors=4, uid_of=lambda _u: None,
                     vg_exists=lambda _v: False)
    config = load.build(load.read_raw([conf]), host)
    files = os.path.join(config.machinetypes["grow"].machinetype_path, "files")
    os.makedirs(files, exist_ok=True)
    with open(os.path.join(files, "disk.img"), "wb") as f:
        f.write(b"\x11" * (4 * MIB))
    backend = LibvirtBackend(config.settings, shutdown_wait_seconds=3)
    probe = backend.probe()
    require_engine("libvirt", probe.available, probe.reason)
    backend.prepare_host()
    yield paths, config, backend
    conn = backend._conn()
    for dom in conn.listAllDomains(0):
        if ordinal_of(FACTORY, dom.name()) >= 0:
            try:
                dom.destroy()
            except Exception:  # noqa: BLE001 (already gone)
                pass
    shutil.rmtree(top, ignore_errors=True)


def _spec(paths, config) -> MachineSpec:
    mt = config.machinetypes["grow"]
    slot = Slot(21, machine_name(FACTORY, 21))
    created = int(time.time())
    write_slot_record(paths, slot.name, SlotRecord(created, mt.name, mt.machine_model))
    d = MachineDir.create(paths, created, mt.name, slot.name)
    machine_uuid = str(uuidlib.uuid4())
    d.write("jobfeatures/job_id", machine_uuid)
    d.write("jobfeatures/allocated_cpu", "1\n")
    d.write("machinefeatures/total_cpu", "4")
    d.write("user_data", WRITE, mode=0o755)
    d.write("ip", slot.ip)
    return MachineSpec(name=slot.name, machinetype=mt, settings=config.settings, slot=slot,
                       processors=1, memory_mb=256, created=created,
                       shutdown_time=created + 3600, uuid=machine_uuid, directory=d)


def test_a_running_vms_disk_files_are_counted_with_their_room(lab):
    paths, config, backend = lab
    spec = _spec(paths, config)
    backend.create(spec)
    try:
        def found():
            return sorted((g for g in backend.disk_growth() if g.machine == spec.name),
                          key=lambda g: g.size)

        def written() -> bool:
            files = found()
            return len(files) == 2 and files[1].allocated >= 24 * MIB
        assert wait_until(written), found()
        overlay, disk = found()
        assert overlay.size == 4 * MIB and disk.size == 2 * GB
        assert overlay.directory == disk.directory == paths.tmp
        assert disk.room == 2 * GB - disk.allocated and disk.allocated < GB
        assert os.listdir(paths.tmp) == []       # unlinked: only QEMU holds them
        assert (overlay.kind, disk.kind) == (ROOT_DISK, SCRATCH_DISK)
        places, growing = hostdisk.disk_files(hostdisk.growth_files([backend]))
        assert places == [("libvirt disk files", paths.tmp)]
        reading = diskspace.read(paths.state_dir, scratch.pool(paths.state_dir), [], places,
                                 False, growing)
        [fs] = [f for f in reading.filesystems if "libvirt disk files" in f.names]
        assert "state directory" in fs.names and fs.growth >= disk.room
    finally:
        backend.destroy(spec.name, spec.directory)
    assert [g for g in backend.disk_growth() if g.machine == spec.name] == []
