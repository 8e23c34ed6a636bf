# SPDX-License-Identifier: BSD-2-Clause
"""The backend contract: what the factory may ask of libvirt, Docker, Podman, Apptainer and
fakes.

Five methods every backend has: probe, create, destroy, list_machines, status. The others have
defaults a backend overrides when it has more to do: prepare_host, watch, parallel_creations,
cgroup_path, release, release_leftovers, kill_strays, stop, collect, and the disk's two,
data_root and disk_growth (what admission by free disk space watches besides the state
directory and the scratch pool). A backend declares the
machine models it serves and where its machines see MJF and joboutputs (Capabilities).

Who writes what: create writes backend.json; status (and list_machines, which may call it) may
write backend.json too, the adoption record of a machine Vac 03 started (Docker, Podman,
Apptainer) and the exit code it reaped (Apptainer), and a fake's shutdown_message; collect
writes what it finds of a machine's end into its directory; destroy and the release methods
remove what the machine held on the host (containers, domains, cgroups, scratch, LVs, the
config drive) and write nothing. probe, watch, parallel_creations, cgroup_path, data_root and
disk_growth only read. Each method's docstring says the same for itself.

Foreign exceptions never leave a backend: they become vac.errors.BackendError (or a subclass)
with `raise ... from e`. Nothing outside vac/backends/ knows which library a backend uses: `vac
doctor` asks a backend wing for its checks (vac.backends.checks) and vacd for the servers it
runs beside its cycles (HostServices, through vac.backends.host_services).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar, FrozenSet, List, Mapping, Optional, Protocol

from vac.machine.directory import MachineDir, MachineState

if TYPE_CHECKING:
    from vac.backends.watch import Watcher
    from vac.config.model import Config, MachineType, Settings
    from vac.machine.slots import Slot


@dataclass(frozen=True)
class Capabilities:
    """What a backend's machines see; replaces the original's `if model in vmModels` chains."""

    machinefeatures_url: str
    jobfeatures_url: str
    joboutputs_url: str
    needs_metadata_server: bool = False


@dataclass(frozen=True)
class Probe:
    """Is the backend usable on this host now? If not, why (a sentence an admin can act on)."""

    available: bool
    version: str = ""
    reason: str = ""


@dataclass(frozen=True)
class MachineSpec:
    """Everything a backend needs to create one machine. The directory is already populated
    with MJF, joboutputs/ and user_data when create() is called."""

    name: str
    machinetype: MachineType
    settings: Settings
    slot: Slot
    processors: int
    memory_mb: int
    created: int
    shutdown_time: int
    uuid: str
    directory: MachineDir

    @property
    def model(self) -> str:
        return self.machinetype.machine_model


@dataclass(frozen=True)
class MachineStatus:
    """What a backend observes of one of its machines."""

    name: str
    state: MachineState
    cpu_seconds: float = 0.0
    backend_id: str = ""
    exit_code: Optional[int] = None
    oom_killed: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)
    extra: Mapping[str, str] = field(default_factory=dict)


ROOT_DISK = "root"           # DiskGrowth.kind of a machine's root disk (or its overlay)
SCRATCH_DISK = "scratch"     # DiskGrowth.kind of a machine's scratch disk
# A machine's backend record (backend.json) key: true when its scratch disk is its logical
# volume of volume_group, named as the machine (a VM's; its bytes in use are LVM's to say).
SCRATCH_VOLUME = "scratch_volume"


@dataclass(frozen=True)
class DiskGrowth:
    """A disk file of a running machine that may still grow on the host's disk (a sparse
    file, a qcow2 overlay): the machine's name, the directory the file is (or was, if unlinked)
    in, the size it may reach, the bytes allocated to it now and which disk it is (ROOT_DISK,
    SCRATCH_DISK, "" when the backend cannot say): a scratch disk's allocated bytes are the
    machine's scratch bytes in its heartbeat."""

    machine: str
    directory: str
    size: int
    allocated: int
    kind: str = ""

    @property
    def room(self) -> int:
        """Bytes it may still grow by."""
        return max(self.size - self.allocated, 0)


class Backend(abc.ABC):
    """Base class of every backend. Subclasses set NAME, MODELS and CAPABILITIES."""

    NAME: ClassVar[str]
    MODELS: ClassVar[FrozenSet[str]]
    CAPABILITIES: ClassVar[Capabilities]
    DATA_ROOT_NAME: ClassVar[str] = "data root"   # what data_root() is, in `vac doctor`'s words

    def __init__(self, settings: Settings):
        self.settings = settings

    def prepare_host(self) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Optional once-per-cycle host preparation, before creations (libvirt: the NAT
        network, defined, started or completed). Writes nothing under the state directory.
        No-op here."""

    @abc.abstractmethod
    def probe(self) -> Probe:
        """Is the engine/library usable? Must not raise; must return within seconds. Reads
        only (the factory asks once a cycle for each backend a machinetype uses)."""

    @abc.abstractmethod
    def create(self, spec: MachineSpec) -> str:
        """Start the machine; return its backend id (recorded by the backend in backend.json;
        jobfeatures/job_id stays the factory's UUID, which user_data and MJF already carry).
        Writes backend.json and what the machine needs in its directory (libvirt: the config
        drive); makes what it holds on the host (container, domain, cgroup, scratch, LV).

        Raises:
            BackendError: creation failed; nothing of the machine is left running.
        """

    @abc.abstractmethod
    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        """Stop the machine and release everything it holds. Absent counts as success.
        It reads nothing of the machine's last state: finishing collects before it. It
        writes nothing in the machine's directory (libvirt removes the config drive)."""

    @abc.abstractmethod
    def list_machines(self) -> List[MachineStatus]:
        """Every machine this backend holds that Vac owns (by label/name and factory). May
        write what status() writes (Apptainer lists through status)."""

    @abc.abstractmethod
    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        """Current state and CPU seconds of one machine; SHUTDOWN if the backend has none.
        Not only a read: it may write backend.json, the adoption record of a machine Vac 03
        started and left without one (Docker, Podman, Apptainer) and the exit code it reaped
        (Apptainer); the fake writes a machine's shutdown_message when it ends."""

    def watch(self, on_end: Callable[[str], None]) -> Optional[Watcher]:
        """A started Watcher calling on_end(machine name) as soon as a machine of this
        factory ends, or None if this backend cannot tell (vacd then relies on cycles).
        Writes nothing: vacd's cycle does, when woken."""
        return None

    def parallel_creations(self) -> int:
        """How many create() calls the cycle may run at once on this backend (its
        *_parallel_creations setting); 1 unless the backend is safe to call concurrently."""
        return 1

    def cgroup_path(self, name: str, directory: Optional[MachineDir]) -> Optional[str]:
        """The cgroup holding everything of one running machine, as /proc/<pid>/cgroup's
        0:: line names it (its pressure is read there on cgroup v2), or None where the
        backend cannot tell. Must not raise. Default: None."""
        return None

    def data_root(self) -> Optional[str]:
        """The directory where this backend's engine keeps, outside the factory's state
        directory, what grows on the host's disk with its machines (Docker: its DockerRootDir,
        images and the containers' writable layers; Podman: its storage's graph root, the
        user's own for a rootless Podman), as an absolute path of an existing directory.
        None (the default) when the backend keeps nothing of its own on disk that grows: what
        its machines write is in the state directory (libvirt's disk files in its tmp/,
        Apptainer's images in its imagecache/) or in their scratch, both watched already.
        Admission by free disk space watches its filesystem, labelled "<NAME>
        <DATA_ROOT_NAME>". Reads only; may ask the engine.

        Raises:
            BackendError: the engine could not be asked (asked again next cycle).
        """
        return None

    def disk_growth(self) -> List[DiskGrowth]:
        """The disk files of this backend's running machines that may still grow on the
        host's filesystems (libvirt: a VM's sparse disk file or qcow2 overlay; a logical volume
        is none, it takes no more as it fills): admission by free disk space counts their room
        where their directory is, as it counts the room left in the machines' scratch. Reads
        only; must not raise. Default: none."""
        return []

    def release(self, directory: MachineDir) -> bool:
        """Release what a finished machine still holds of this backend's (a cgroup parent
        that a vacd killed during destroy left behind); True if something was released.
        Default: nothing."""
        return False

    def release_leftovers(self, machines_dir: str, factory_name: str) -> List[str]:
        """Once per cycle: release what machines of this factory that are finished, or whose
        directory under machines_dir has gone, still hold on the host (Docker: cgroup
        parents, found by the machine directory's name, with or without backend.json).
        Returns the machine directory names released. Default: none."""
        return []

    def kill_strays(self) -> int:
        """Once per cycle: kill processes this backend runs outside any live machine
        (Apptainer's zombie killer). Returns how many were killed. Default: none."""
        return 0

    def stop(self, name: str, directory: Optional[MachineDir]) -> None:  # noqa: B027
        """Ask a running machine to end, waiting a bounded time (libvirt: ACPI shutdown and
        shutdown_wait_seconds), so that what it does on its way down is there for collect.
        Finishing calls it for a machine the factory ends, before collect; destroy follows and
        ends what is left. Absent counts as success. Default: nothing (destroy ends it)."""

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        """The one read of a machine's last state (exit code, OOM kill, console, CPU
        seconds), before its single destroy; may write what it finds into the directory
        (console.log, joboutputs/, an OOM shutdown_message if none, backend.json).
        Default: status()."""
        return self.status(name, directory)


class HostServices(Protocol):
    """The servers vacd runs beside its cycles for the backends' machines (the VMs' metadata
    service), from vac.backends.host_services: vacd passes ensure to the Factory as its
    after_prepare hook and closes them on exit."""

    def ensure(self, config: Config) -> List[str]:
        """After each cycle's host preparation: start or re-bind the servers if a configured
        backend's machines need them (Capabilities.needs_metadata_server); return what could
        not be bound, as sentences."""

    def close(self) -> None:
        """Stop every server (vacd's exit)."""
