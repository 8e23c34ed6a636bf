# SPDX-License-Identifier: BSD-2-Clause
"""The libvirt backend on a real libvirtd + QEMU (TCG here), booting the Vac test guest.

The guest (scripts/ci/build-test-guest.sh) is a kernel + busybox initramfs booted directly;
its /init reads user_data from the config drive (or, with vac.datasource=network on the
kernel command line, from the metadata service), runs it, returns joboutputs by HTTP PUT or
as VAC-JOBOUTPUT console lines, and powers off. Each guest takes a few seconds under TCG.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest
from libvirt_env import GUEST, guest_problem
from testbed import require_engine
from waiting import Stopwatch

from vac.backends.base import MachineSpec
from vac.backends.libvirt import metadata
from vac.backends.libvirt import network as vmnetwork
from vac.config import load, model
from vac.errors import BackendUnavailable
from vac.host.facts import HostFacts
from vac.machine.directory import MachineDir, MachineState, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name, ordinal_of
from vac.paths import Paths

pytestmark = pytest.mark.libvirt

FACTORY = "vactest.example.com"
CONF = """
[settings]
vac_space = space.example.com
factory_name = {factory}
state_dir = {state}
mb_per_processor = 256
libvirt_virt_type = auto

[machinetype guest]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet no_timer_check

[machinetype netguest]
machine_model = vm-raw
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet no_timer_check vac.datasource=network

[machinetype rawdisk]
machine_model = vm-raw
root_image = disk.img
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet no_timer_check

[machinetype cernvm]
machine_model = cernvm3
root_image = cernvm.iso
kernel = {guest}/vmlinuz
initrd = {guest}/initrd.img
cmdline = console=ttyS0 quiet no_timer_check
"""


@dataclasses.dataclass
class Lab:
    paths: Paths
    config: model.Config
    backend: object
    conn: object


@pytest.fixture(scope="module")
def lab():
    from vac.backends.libvirt.backend import LibvirtBackend

    problem = guest_problem()
    require_engine("libvirt", not problem, problem)
    top = tempfile.mkdtemp(prefix="vac-libvirt-test-", dir="/var/tmp")
    os.chmod(top, 0o755)           # QEMU runs as libvirt-qemu and must reach the files
    paths = Paths(os.path.join(top, "state"))
    paths.ensure()
    conf = os.path.join(top, "vac.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(factory=FACTORY, state=paths.state_dir, guest=GUEST))
    host = HostFacts(fqdn=FACTORY, processors=4, uid_of=lambda _u: None,
                     vg_exists=lambda _v: False)
    cfg = load.build(load.read_raw([conf]), host)
    backend = LibvirtBackend(cfg.settings, shutdown_wait_seconds=3)
    probe = backend.probe()
    require_engine("libvirt", probe.available, probe.reason)
    conn = backend._conn()
    _destroy_ours(conn)
    backend.prepare_host()
    yield Lab(paths, cfg, backend, conn)
    _destroy_ours(conn)
    shutil.rmtree(top, ignore_errors=True)


def _destroy_ours(conn) -> None:
    for dom in conn.listAllDomains(0):
        if ordinal_of(FACTORY, dom.name()) >= 0:
            try:
                dom.destroy()
            except Exception:  # noqa: BLE001 (already gone)
                pass


def _machine(lab: Lab, machinetype: str, ordinal: int, user_data: str, processors: int = 1):
    """A populated machine directory and its MachineSpec (what vac.cycle.creation prepares)."""
    mt = lab.config.machinetypes[machinetype]
    slot = Slot(ordinal, machine_name(FACTORY, ordinal))
    created = int(time.time())
    write_slot_record(lab.paths, slot.name, SlotRecord(created, mt.name, mt.machine_model))
    d = MachineDir.create(lab.paths, created, mt.name, slot.name)
    machine_uuid = str(uuidlib.uuid4())
    d.write("jobfeatures/job_id", machine_uuid)
    d.write("jobfeatures/allocated_cpu", f"{processors}\n")
    d.write("machinefeatures/total_cpu", "4")
    d.write("user_data", user_data, mode=0o755)
    d.write("ip", slot.ip)
    spec = MachineSpec(name=slot.name, machinetype=mt, settings=lab.config.settings, slot=slot,
                       processors=processors, memory_mb=256 * processors, created=created,
                       shutdown_time=created + 3600, uuid=machine_uuid, directory=d)
    return spec, d


def _run_to_end(lab: Lab, name: str, timeout: float = 90.0) -> float:
    """Poll status() until the domain is gone; return the largest CPU seconds seen."""
    deadline = time.monotonic() + timeout
    cpu = 0.0
    while time.monotonic() < deadline:
        status = lab.backend.status(name, None)
        if status.state == MachineState.SHUTDOWN:
            return cpu
        assert status.state in (MachineState.RUNNING, MachineState.PAUSED)
        cpu = max(cpu, status.cpu_seconds)
        time.sleep(0.2)
    pytest.fail(f"{name} still running after {timeout} s")


def _wait_console(d: MachineDir, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (d.read("console.log", 1 << 20) or ""):
            return
        time.sleep(0.2)
    pytest.fail(f"{text!r} not on the console after {timeout} s")


def _domain_xml(lab: Lab, name: str) -> ET.Element:
    return ET.fromstring(lab.conn.lookupByName(name).XMLDesc(0))


def test_config_drive_guest_returns_shutdown_message_on_console(lab):
    user_data = ("#!/bin/sh\n"
                 "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done\n"
                 'cat "$JOBFEATURES/job_id" > "$JOBOUTPUTS_DIR/job_id_seen"\n'
                 'cat "$MACHINEFEATURES/total_cpu" > "$JOBOUTPUTS_DIR/total_cpu_seen"\n'
                 'echo "300 Nothing to do" > "$JOBOUTPUTS_DIR/shutdown_message"\n')
    spec, d = _machine(lab, "guest", 10, user_data)
    assert lab.backend.create(spec) == spec.uuid
    listed = {s.name: s for s in lab.backend.list_machines()}
    assert listed[spec.name].backend_id == spec.uuid
    assert all(ordinal_of(FACTORY, n) >= 0 for n in listed)
    dom = _domain_xml(lab, spec.name)
    assert dom.get("type") == lab.backend.virt_type
    assert dom.find("devices/interface/mac").get("address").upper() == spec.slot.mac
    assert os.listdir(lab.paths.tmp) == []
    cpu = _run_to_end(lab, spec.name)
    assert cpu > 0
    assert d.shutdown_message is None                 # not yet: it is on the console
    final = lab.backend.collect(spec.name, d)
    assert final.state == MachineState.SHUTDOWN
    assert d.shutdown_message == "300 Nothing to do"
    assert d.read("joboutputs/job_id_seen").strip() == spec.uuid
    assert d.read("joboutputs/total_cpu_seen").strip() == "4"
    assert "shutdown_message" in final.extra["console_joboutputs"]
    lab.backend.destroy(spec.name, d)                  # absent: success, releases the drive
    assert not d.exists("config-drive.iso")


def test_network_guest_uses_the_metadata_service(lab):
    servers = metadata.MetadataServers(metadata.MetadataService(lab.paths, FACTORY))
    try:
        assert servers.ensure() == []
        user_data = ("#!/bin/sh\n"
                     'vac-http get "$JOBFEATURES/job_id" > "$JOBOUTPUTS_DIR/job_id_seen"\n'
                     "vac-http get http://169.254.169.254/openstack/latest/meta_data.json"
                     ' > "$JOBOUTPUTS_DIR/meta_data_seen"\n'
                     "vac-http get http://169.254.169.254/latest/meta-data/local-hostname"
                     ' > "$JOBOUTPUTS_DIR/hostname_seen"\n'
                     'echo "300 Nothing to do" > "$JOBOUTPUTS_DIR/shutdown_message"\n')
        spec, d = _machine(lab, "netguest", 11, user_data)
        lab.backend.create(spec)
        _run_to_end(lab, spec.name)
        assert d.shutdown_message == "300 Nothing to do"      # PUT, before any collect()
        assert d.read("joboutputs/job_id_seen") == spec.uuid
        seen = json.loads(d.read("joboutputs/meta_data_seen"))
        assert seen["uuid"] == spec.uuid and seen["hostname"] == spec.name
        assert d.read("joboutputs/hostname_seen") == spec.name
        console = d.read("console.log", 1 << 20)
        assert "VAC-GUEST: network 169.254.169.11/16" in console
        assert "VAC-JOBOUTPUT " not in console
        assert "console_joboutputs" not in lab.backend.collect(spec.name, d).extra
    finally:
        servers.close()


def test_destroy_forces_a_guest_that_ignores_acpi(lab):
    spec, d = _machine(lab, "guest", 12, "#!/bin/sh\nsleep 600\n")
    made = Stopwatch()              # what starting a guest costs here now
    made.time(lambda: lab.backend.create(spec))
    _wait_console(d, "VAC-GUEST: payload start")
    assert lab.backend.status(spec.name, d).state == MachineState.RUNNING
    _rename_while_in_use(lab)
    stale = MachineDir.create(lab.paths, spec.created - 100, "guest", spec.name)
    stale.write("jobfeatures/job_id", str(uuidlib.uuid4()))
    lab.backend.destroy(spec.name, stale)              # another machine's directory
    assert lab.backend.status(spec.name, d).state == MachineState.RUNNING
    started = time.monotonic()
    lab.backend.destroy(spec.name, d)
    elapsed = time.monotonic() - started
    wait = lab.backend.shutdown_wait_seconds        # then forced: at most 3 starts' cost
    assert wait <= elapsed < made.bound(3, 20 - wait, plus=wait), (elapsed, made.samples)
    assert lab.backend.status(spec.name, d).state == MachineState.SHUTDOWN
    assert spec.name not in {s.name for s in lab.backend.list_machines()}
    lab.backend.destroy(spec.name, d)                  # absent counts as success


def _host_names(net, flags=0):
    return [h.get("name") for h in ET.fromstring(net.XMLDesc(flags)).findall("ip/dhcp/host")]


def _rename_while_in_use(lab: Lab) -> None:
    """A factory rename while a VM uses the network changes only the definition."""
    import libvirt

    net = lab.conn.networkLookupByName(vmnetwork.NETWORK_NAME)
    lab.backend.settings = dataclasses.replace(lab.config.settings,
                                               factory_name="other.example.com")
    try:
        lab.backend.prepare_host()
        assert net.isActive()
        assert _host_names(net)[7] == machine_name(FACTORY, 7)
        assert _host_names(net, libvirt.VIR_NETWORK_XML_INACTIVE)[7] == "other-07.example.com"
    finally:
        lab.backend.settings = lab.config.settings
        lab.backend.prepare_host()
    assert _host_names(net, libvirt.VIR_NETWORK_XML_INACTIVE)[7] == machine_name(FACTORY, 7)


def test_vm_raw_overlay_leaves_the_image_unchanged(lab):
    files = os.path.join(lab.config.machinetypes["rawdisk"].machinetype_path, "files")
    os.makedirs(files, exist_ok=True)
    image = os.path.join(files, "disk.img")
    with open(image, "wb") as f:
        f.write(b"\x11" * (4 * 1024 * 1024))
    before = hashlib.sha256(open(image, "rb").read()).hexdigest()
    user_data = ("#!/bin/sh\n"
                 "echo overwritten | dd of=/dev/vda bs=512 count=1 conv=notrunc,fsync\n"
                 'dd if=/dev/vda bs=11 count=1 > "$JOBOUTPUTS_DIR/vda_head"\n')
    spec, d = _machine(lab, "rawdisk", 13, user_data)
    lab.backend.create(spec)
    disks = _domain_xml(lab, spec.name).findall("devices/disk")
    root = next(x for x in disks if x.find("target").get("dev") == "vda")
    assert root.find("driver").get("type") == "qcow2"
    overlay = root.find("source").get("file")
    assert os.path.dirname(overlay) == lab.paths.tmp
    assert os.path.basename(overlay).startswith("root.disk.")
    assert not os.path.exists(overlay)                 # unlinked once QEMU holds it
    assert root.find("backingStore/source").get("file") == image
    _run_to_end(lab, spec.name)
    lab.backend.collect(spec.name, d)
    assert d.read("joboutputs/vda_head") == "overwritten"
    assert d.shutdown_message == "200 Intended work completed ok"
    assert hashlib.sha256(open(image, "rb").read()).hexdigest() == before


def test_cernvm3_iso_and_sparse_root_disk(lab):
    import pycdlib

    files = os.path.join(lab.config.machinetypes["cernvm"].machinetype_path, "files")
    os.makedirs(files, exist_ok=True)
    iso_path = os.path.join(files, "cernvm.iso")
    iso = pycdlib.PyCdlib()
    iso.new(vol_ident="CERNVM_TEST")
    iso.add_fp(io.BytesIO(b"boot"), 4, "/BOOT.TXT;1")
    iso.write(iso_path)
    iso.close()
    spec, d = _machine(lab, "cernvm", 14, "#!/bin/sh\nls /dev/sr0 /dev/vda\n", processors=2)
    lab.backend.create(spec)
    dom_xml = _domain_xml(lab, spec.name)
    assert dom_xml.findtext("vcpu") == "2"
    disks = {x.find("target").get("dev"): x for x in dom_xml.findall("devices/disk")}
    assert disks["hdc"].get("device") == "cdrom"
    assert disks["hdc"].find("source").get("file") == iso_path
    assert disks["hdc"].find("readonly") is not None
    root_file = disks["vda"].find("source").get("file")
    assert os.path.basename(root_file).startswith("root.disk.")
    assert not os.path.exists(root_file)
    capacity = lab.conn.lookupByName(spec.name).blockInfo("vda")[0]
    assert capacity == 40 * 2 * 10 ** 9
    assert disks["vdb"].find("source").get("file") == d.file("config-drive.iso")
    _run_to_end(lab, spec.name)
    lab.backend.collect(spec.name, d)
    assert d.shutdown_message == "200 Intended work completed ok"
    assert os.listdir(lab.paths.tmp) == []


def test_prepare_host_keeps_one_network_and_renames_in_place(lab):
    libvirt_net = lab.conn.networkLookupByName(vmnetwork.NETWORK_NAME)
    net_uuid = libvirt_net.UUIDString()
    other = dataclasses.replace(lab.config.settings, factory_name="other.example.com")
    lab.backend.settings = other
    try:
        lab.backend.prepare_host()                    # idle: renamed live at once
        assert _host_names(libvirt_net)[7] == "other-07.example.com"
    finally:
        lab.backend.settings = lab.config.settings
        lab.backend.prepare_host()
    libvirt_net = lab.conn.networkLookupByName(vmnetwork.NETWORK_NAME)
    assert libvirt_net.UUIDString() == net_uuid
    assert libvirt_net.isActive() and libvirt_net.isPersistent() and libvirt_net.autostart()
    assert vmnetwork.check_network(libvirt_net.XMLDesc(0), FACTORY) == ([], [])


def test_libvirtd_unreachable_is_reported_not_raised(lab):
    from vac.backends.libvirt.backend import LibvirtBackend

    settings = dataclasses.replace(lab.config.settings,
                                   libvirt_uri="qemu+unix:///system?socket=/nonexistent/sock")
    reachable = Stopwatch()         # what a probe of the running libvirtd costs here now
    assert reachable.time(LibvirtBackend(lab.config.settings, connect_timeout=5).probe).available
    backend = LibvirtBackend(settings, connect_timeout=5)
    started = time.monotonic()
    probe = backend.probe()
    assert not probe.available and "libvirtd" in probe.reason
    took = time.monotonic() - started   # one connect timeout at most, and a probe's work
    assert took < 5 + reachable.bound(2, 1), (took, reachable.samples)
    with pytest.raises(BackendUnavailable):
        backend.status(machine_name(FACTORY, 15), None)
    with pytest.raises(BackendUnavailable):
        backend.list_machines()
