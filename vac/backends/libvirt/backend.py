# SPDX-License-Identifier: BSD-2-Clause
"""The libvirt backend: VMs (cernvm3, cernvm4, vm-raw) as transient libvirt/QEMU domains.

Each VM is a transient domain (createXML) named after its slot's FQDN, with the factory's
UUID for the machine as domain UUID (the backend id), on the NAT network vac_169.254.0.0 with
its slot's MAC, a serial console logged to <machine dir>/console.log, VNC on
127.0.0.1:5900+ordinal, and an OpenStack config drive (label config-2) holding its user_data,
meta_data.json and an MJF snapshot. Poweroff, reboot and crash all end the domain.

Disks (vac.backends.libvirt.images): cernvm3/cernvm4 boot the root_image ISO from an IDE CD-ROM
and get a root disk (an LV with volume_group, else a sparse file of disk_gb_per_processor
(default 40) x processors GB); vm-raw gets a qcow2 overlay over the (cached) image plus a
scratch disk (an LV with volume_group, else a sparse file only if disk_gb_per_processor is set).
The LV (vac.host.lvm) is thin when the group has a thin pool for Vac, else thick; destroy()
removes it, and release_leftovers() the ones of finished machines that a failed destroy left.
Temporary disk files live in <state>/tmp and are unlinked once QEMU has them open. With
machinetype kernel/initrd/cmdline the domain boots that kernel directly, and root_image may be
unset.

Domain type (libvirt_virt_type): kvm or qemu as configured; "auto" chooses kvm only if
libvirt offers kvm, /dev/kvm is usable, and this host is not itself a virtual machine (the
"hypervisor" CPU flag in /proc/cpuinfo): nested KVM is seen to hang guests at boot on
such hosts, so they get qemu (TCG), with one log line saying why.

Returning joboutputs without a network: a guest may print lines
    VAC-JOBOUTPUT <name> <base64 of the content>
on its serial console; collect() parses them from console.log into joboutputs/ (bounded,
single-component names, never replacing a file the guest already PUT over HTTP).

The domain XML itself is rendered by vac.backends.libvirt.domainxml.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Dict, List, Optional, Set, Tuple

from vac import fsutil, optional
from vac.backends import scratchmount
from vac.backends.base import (SCRATCH_VOLUME, Backend, Capabilities, MachineSpec, MachineStatus,
                               Probe)
from vac.backends.imageversion import url_image_record
from vac.backends.libvirt import configdrive, console, images, metadata, network, scope, signature
from vac.backends.libvirt.console import CONSOLE_LOG, read_console_tail  # noqa: F401 - tests
from vac.backends.libvirt.domainxml import (
    NWFILTER,
    Disk,
    DomainParams,
    config_drive_target,
    render_domain_xml,
)
from vac.backends.libvirt.virttype import choose_virt_type, host_kvm_facts
from vac.backends.libvirt.watch import LibvirtWatcher
from vac.config import models
from vac.errors import BackendError, BackendUnavailable, VacError
from vac.host import access
from vac.machine import joboutputs
from vac.machine.directory import MachineDir, MachineState
from vac.machine.slots import ordinal_of

log = logging.getLogger(__name__)

CONFIG_DRIVE = "config-drive.iso"
VM_MODELS = frozenset(models.VM_MODELS)


def _libvirt() -> Any:
    """The libvirt module, imported on first use.

    Raises:
        BackendUnavailable: libvirt-python is not installed.
    """
    try:
        import libvirt
    except ImportError as e:
        missing = optional.for_backend("libvirt", "libvirt")
        raise BackendUnavailable("libvirt", missing.text()) from e
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


class LibvirtBackend(Backend):
    """VMs as transient libvirt domains on the factory's NAT network."""

    NAME = "libvirt"
    MODELS = VM_MODELS
    CAPABILITIES = Capabilities(machinefeatures_url=metadata.MACHINEFEATURES_URL,
                                jobfeatures_url=metadata.JOBFEATURES_URL,
                                joboutputs_url=metadata.JOBOUTPUTS_URL,
                                needs_metadata_server=True)

    def __init__(self, settings, shutdown_wait_seconds: Optional[float] = None,
                 connect_timeout: float = 10.0):
        super().__init__(settings)
        self._shutdown_wait_seconds = shutdown_wait_seconds
        self.connect_timeout = connect_timeout
        self._connection = None
        self._connection_uri = ""
        self._lock = threading.Lock()
        self._virt_type: Optional[Tuple[str, str]] = None   # (setting, chosen type)
        self._stopped: Set[str] = set()   # names whose domain stop() has given its ACPI shutdown
        # The CPU seconds last seen of each domain: a transient domain that powered off is gone
        # with its counters, so status() and collect() report what was seen while it ran.
        self._cpu_seen: Dict[str, float] = {}

    @property
    def shutdown_wait_seconds(self) -> float:
        """How long destroy() waits after the ACPI request: the constructor's argument, else
        libvirt_shutdown_wait_seconds."""
        if self._shutdown_wait_seconds is not None:
            return self._shutdown_wait_seconds
        return self.settings.libvirt_shutdown_wait_seconds

    # Connection ---------------------------------------------------------------------------

    def _open(self) -> Any:
        """A new connection, opened in a thread so a wedged libvirtd cannot hang us."""
        libvirt = _libvirt()
        uri = self.settings.libvirt_uri
        box: Dict[str, Any] = {}

        def opener() -> None:
            try:
                box["conn"] = libvirt.open(uri)
            except libvirt.libvirtError as e:
                box["error"] = e.get_error_message()

        thread = threading.Thread(target=opener, name="libvirt-open", daemon=True)
        thread.start()
        thread.join(self.connect_timeout)
        if thread.is_alive():
            raise BackendUnavailable("libvirt", f"{uri} did not answer within "
                                     f"{self.connect_timeout:g} s; is libvirtd running?")
        if "conn" not in box:
            raise BackendUnavailable("libvirt", f"cannot connect to {uri}: "
                                     f"{box.get('error')}; is libvirtd running?")
        return box["conn"]

    def _conn(self) -> Any:
        with self._lock:
            conn, uri = self._connection, self.settings.libvirt_uri
            try:
                alive = conn is not None and self._connection_uri == uri and conn.isAlive()
            except Exception:  # noqa: BLE001 (a dead connection raises libvirtError)
                alive = False
            if not alive:
                self._connection = self._open()
                self._connection_uri = uri
            return self._connection

    def _call(self, what: str, fn, *args, machine: Optional[str] = None) -> Any:
        """Run a libvirt call; its errors become BackendError."""
        libvirt = _libvirt()
        try:
            return fn(*args)
        except libvirt.libvirtError as e:
            raise BackendError("libvirt", f"{what}: {e.get_error_message()}", machine) from e

    def _lookup(self, name: str) -> Any:
        """The domain named `name`, or None."""
        libvirt = _libvirt()
        try:
            return self._conn().lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise BackendError("libvirt", f"lookup: {e.get_error_message()}", name) from e

    # Contract -----------------------------------------------------------------------------

    def _forget_connection(self) -> None:
        """Drop the cached connection after a call on it failed; the next _conn() opens a
        new one. Without an event loop libvirt notices a libvirtd that has gone (stopped,
        or restarted since) only when a call fails: conn.isAlive() stays true until then."""
        with self._lock:
            conn, self._connection = self._connection, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 (closing a dead connection may fail)
                pass

    def watch(self, on_end) -> Optional[LibvirtWatcher]:
        watcher = LibvirtWatcher(self.settings.libvirt_uri, on_end)
        watcher.start()
        return watcher

    def parallel_creations(self) -> int:
        return self.settings.libvirt_parallel_creations

    def probe(self) -> Probe:
        """Asks libvirtd for its versions; a cached connection that fails is replaced once,
        so a restarted libvirtd is available at once and a stopped one says so."""
        try:
            try:
                return self._probe_once()
            except VacError:
                raise
            except Exception:  # noqa: BLE001 (a connection to a libvirtd that has gone)
                self._forget_connection()
                return self._probe_once()
        except VacError as e:
            return Probe(False, reason=str(e))
        except Exception as e:  # noqa: BLE001 (probe must never raise)
            self._forget_connection()
            return Probe(False, reason=f"libvirt: {e}")

    def _probe_once(self) -> Probe:
        missing = optional.backend_missing(self.NAME)   # libvirt, and pycdlib for config drives
        if missing is not None:
            return Probe(False, reason=missing.text())
        conn = self._conn()
        version = (f"libvirt {_version(conn.getLibVersion())}, "
                   f"{conn.getType()} {_version(conn.getVersion())}")
        return Probe(True, version=version)

    def prepare_host(self) -> None:
        network.ensure_network(self._conn(), self.settings.factory_name,
                                 self.settings.forward_dev)

    @property
    def virt_type(self) -> str:
        """The domain type used for new VMs (decided once per libvirt_virt_type value)."""
        setting = self.settings.libvirt_virt_type
        if self._virt_type is None or self._virt_type[0] != setting:
            caps = self._call("capabilities", self._conn().getCapabilities)
            chosen, why = choose_virt_type(setting, "domain type='kvm'" in caps,
                                           *host_kvm_facts())
            log.info("libvirt domains will be of type %s: %s", chosen, why)
            self._virt_type = (setting, chosen)
        return self._virt_type[1]

    def create(self, spec: MachineSpec) -> str:
        if spec.model not in VM_MODELS:
            raise BackendError("libvirt", f"model {spec.model} is not a VM model", spec.name)
        conn = self._conn()
        directory = spec.directory
        virt_type = self.virt_type
        disks, temporary, lv = self._disks(spec)
        try:
            if spec.machinetype.config_drive:
                drive = configdrive.build_config_drive(directory, self.settings.factory_name,
                                                       directory.file(CONFIG_DRIVE))
                disks.append(Disk(drive, config_drive_target([d.target for d in disks]),
                                  readonly=True))
            xml = render_domain_xml(self._params(spec, virt_type, disks))
            try:
                self._call("createXML", conn.createXML, xml, 0, machine=spec.name)
            except BackendError as e:
                raise _explained(e, spec, disks) from e
        except BaseException:
            if lv:
                self._remove_lv_quietly(spec.name)
            raise
        finally:
            for path in temporary:
                fsutil.unlink_if_present(path)
        directory.write_backend_record({"backend": self.NAME, "uuid": spec.uuid,
                                        "virt_type": virt_type, "volume_group":
                                        self.settings.volume_group if lv else None,
                                        SCRATCH_VOLUME: lv and spec.model == "vm-raw",
                                        **url_image_record(spec.machinetype.root_image,
                                                           self.settings.paths)})
        log.info("%s created: %s domain, %d processors, %d MiB", spec.name, virt_type,
                 spec.processors, spec.memory_mb)
        return spec.uuid

    def _params(self, spec: MachineSpec, virt_type: str, disks: List[Disk]) -> DomainParams:
        mt = spec.machinetype
        kernel = mt.files_path(mt.kernel) if mt.kernel else None
        initrd = mt.files_path(mt.initrd) if mt.initrd and kernel else None
        has_filter = network.nwfilter_exists(self._conn(), NWFILTER)
        return DomainParams(
            virt_type=virt_type, name=spec.name, uuid=spec.uuid, memory_mb=spec.memory_mb,
            vcpus=spec.processors, mac=spec.slot.mac, ip=spec.slot.ip,
            vnc_port=spec.slot.vnc_port, console_log=spec.directory.file(CONSOLE_LOG),
            disks=tuple(disks), boot_dev="cdrom" if spec.model != "vm-raw" else "hd",
            kernel=kernel, initrd=initrd, cmdline=mt.cmdline if kernel else None,
            nwfilter=NWFILTER if has_filter else None, smbios_product=mt.smbios_product)

    def _disks(self, spec: MachineSpec) -> Tuple[List[Disk], List[str], bool]:
        """(disks, temporary files to unlink after createXML, whether an LV was made)."""
        mt = spec.machinetype
        paths = self.settings.paths
        gb = images.disk_gb_per_processor(mt, self.settings)
        image = None
        if mt.root_image or not mt.kernel:
            image = images.resolve_root_image(mt, paths)
        if image and spec.model in ("cernvm3", "cernvm4"):  # refused unless signed as required
            signature.enforce(image, mt.image_signing_dn, spec.name)
        disks: List[Disk] = []
        temporary: List[str] = []
        lv = False
        try:
            if spec.model == "vm-raw":
                if image:
                    overlay = images.create_overlay(image, paths.tmp)
                    temporary.append(overlay)
                    disks.append(Disk(overlay, mt.root_device, format="qcow2"))
                scratch = self._volume(spec, gb, temporary, images.SCRATCH_PREFIX, gb is not None)
                if scratch:
                    disks.append(dataclasses.replace(scratch, target=mt.scratch_device))
                    images.export_scratch_limit(spec.directory, scratch.source)
            else:
                if image:
                    disks.append(Disk(image, "hdc", device="cdrom", readonly=True))
                root = self._volume(spec, gb, temporary, images.ROOT_PREFIX, True)
                disks.append(dataclasses.replace(root, target=mt.root_device))
            lv = any(d.kind == "block" for d in disks)
        except BaseException:
            for path in temporary:
                fsutil.unlink_if_present(path)
            raise
        return disks, temporary, lv

    def _volume(self, spec: MachineSpec, gb: Optional[int], temporary: List[str],
                prefix: str, file_wanted: bool) -> Optional[Disk]:
        """An LV if a volume group is set (thin in its pool, if it has one for Vac), else a
        sparse file if wanted, else None."""
        vg_name = self.settings.volume_group
        if vg_name:
            return Disk(images.create_lv(self.settings, spec.name, spec.processors, gb), "",
                        kind="block")
        if not file_wanted:
            return None
        path = images.create_sparse_file(self.settings.paths.tmp, prefix,
                                           images.sparse_disk_bytes(spec.processors, gb))
        temporary.append(path)
        return Disk(path, "")

    def stop(self, name: str, directory: Optional[MachineDir]) -> None:
        """ACPI shutdown, and up to shutdown_wait_seconds for the guest to power off (what
        it prints meanwhile is in console.log for collect)."""
        libvirt = _libvirt()
        dom = self._lookup(name)
        if dom is None or self._foreign(dom, name, directory):
            return
        self._stopped.add(name)
        try:
            dom.shutdown()
            self._wait_gone(name, self.shutdown_wait_seconds)
        except libvirt.libvirtError as e:
            log.info("%s: ACPI shutdown refused (%s)", name, e.get_error_message())

    def _foreign(self, dom: Any, name: str, directory: Optional[MachineDir]) -> bool:
        """A domain of this name with another UUID than the directory's machine: left alone
        (the zombie killer, which passes no directory, deals with it)."""
        job_id = directory.job_id if directory is not None else None
        if not job_id or dom.UUIDString().lower() == job_id.lower():
            return False
        log.warning("%s: domain %s is not machine %s; left alone", name, dom.UUIDString(), job_id)
        return True

    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        """Force the domain off after its ACPI shutdown (stop(), here unless stop() had it),
        remove its LV and config drive. It reads nothing of the machine: collect() has."""
        libvirt = _libvirt()
        dom = self._lookup(name)
        if dom is not None and directory is not None and self._foreign(dom, name, directory):
            directory.remove(CONFIG_DRIVE)
            return
        if dom is not None and name not in self._stopped:
            self.stop(name, directory)
            dom = self._lookup(name)
        self._stopped.discard(name)
        self._cpu_seen.pop(name, None)
        if dom is not None:
            try:
                dom.destroy()
                log.info("%s: domain destroyed", name)
            except libvirt.libvirtError as e:
                if self._lookup(name) is not None:
                    raise BackendError("libvirt", f"destroy: {e.get_error_message()}",
                                       name) from e
        if directory is not None:
            if directory.read_backend_record().get("volume_group"):
                self._remove_lv(name)
            directory.remove(CONFIG_DRIVE)

    def _wait_gone(self, name: str, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._lookup(name) is None:
                log.info("%s: shut down after ACPI request", name)
                return
            time.sleep(0.2)

    def _remove_lv(self, name: str) -> None:
        if self.settings.volume_group:
            images.remove_lv(self.settings.volume_group, name)

    def _remove_lv_quietly(self, name: str) -> None:
        """Undo an LV after a failed create without hiding the failure."""
        try:
            self._remove_lv(name)
        except BackendError as e:
            log.warning("%s: %s", name, e)

    def release_leftovers(self, machines_dir: str, factory_name: str) -> List[str]:
        """This factory's LVs in volume_group that no living machine holds (a VM's disk left
        by a failed destroy or a killed vacd, the original Vac's), removed."""
        return scratchmount.release_volumes(self.settings, factory_name)

    def list_machines(self) -> List[MachineStatus]:
        libvirt = _libvirt()
        found = []
        for dom in self._call("listAllDomains", self._conn().listAllDomains, 0):
            try:
                name = dom.name()
                if ordinal_of(self.settings.factory_name, name) < 0:
                    continue
                found.append(self._status_of(name, dom))
            except libvirt.libvirtError:
                continue        # the domain went away while we looked
        return found

    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        libvirt = _libvirt()
        dom = self._lookup(name)
        gone = MachineStatus(name, MachineState.SHUTDOWN, cpu_seconds=self._cpu_seen.get(name, 0.0))
        if dom is None:
            return gone
        try:
            return self._status_of(name, dom)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return gone
            raise BackendError("libvirt", f"info: {e.get_error_message()}", name) from e

    def _status_of(self, name: str, dom: Any) -> MachineStatus:
        libvirt = _libvirt()
        state, _max_kib, _kib, _vcpus, cpu_ns = dom.info()
        if state in (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PMSUSPENDED):
            ours = MachineState.PAUSED
        elif state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
            ours = MachineState.SHUTDOWN       # a transient domain on its way out
        else:   # running, blocked, no state, or powering off (VIR_DOMAIN_SHUTDOWN)
            ours = MachineState.RUNNING
        cpu = max(cpu_ns / 1e9, self._cpu_seen.get(name, 0.0))
        self._cpu_seen[name] = cpu
        return MachineStatus(name, ours, cpu_seconds=cpu, backend_id=dom.UUIDString())

    def cgroup_path(self, name: str, directory: Optional[MachineDir]) -> Optional[str]:
        return scope.cgroup_path(name)

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        """Status, after moving joboutputs framed on the serial console into joboutputs/."""
        stored = self.console_joboutputs(directory, joboutputs.Bounds.of(self.settings))
        final = self.status(name, directory)
        if stored:
            final = dataclasses.replace(final, extra={"console_joboutputs": " ".join(stored)})
        return final

    @staticmethod
    def console_joboutputs(directory: MachineDir,
                           bounds: joboutputs.Bounds = joboutputs.Bounds()) -> List[str]:
        """Store the VAC-JOBOUTPUT lines of console.log; return the names stored."""
        return console.store_joboutputs(directory, bounds)

    def disk_growth(self) -> List[Any]:
        """The running VMs' disk files in tmp/ that may still grow: a list of
        vac.backends.base.DiskGrowth (vac.backends.libvirt.diskgrowth). Never raises."""
        from vac.backends.libvirt import diskgrowth

        return list(diskgrowth.growth(self.settings.paths.tmp))


def _version(number: int) -> str:
    return f"{number // 1000000}.{number // 1000 % 1000}.{number % 1000}"


def _explained(e: BackendError, spec: MachineSpec, disks: List[Disk]) -> BackendError:
    """QEMU's "Permission denied" with what `vac doctor` says about it: the directory the
    QEMU user cannot enter on the way to a disk, kernel or console log (or e unchanged)."""
    if "permission denied" not in str(e).lower():
        return e
    mt = spec.machinetype
    paths = [d.source for d in disks if d.kind == "file"] + \
        [mt.files_path(p) for p in (mt.kernel, mt.initrd) if p] + \
        [spec.directory.file(CONSOLE_LOG)]
    why = access.explain_qemu_denied(paths)
    if not why:
        return e
    return BackendError("libvirt", f"{str(e).split(': ', 1)[-1]}: {why}", spec.name)
