# SPDX-License-Identifier: BSD-2-Clause
"""The backend contract: what the factory may ask of libvirt, Docker, Apptainer and fakes.

A backend is small: probe, create, destroy, list_machines, status. It declares the machine
models it serves and where its machines see MJF and joboutputs. Foreign exceptions never
leave a backend: they become vac.errors.BackendError (or a subclass) with `raise ... from e`.
Nothing outside vac/backends/ knows which library a backend uses.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, ClassVar, FrozenSet, List, Mapping, Optional

from vac.machine.directory import MachineDir, MachineState

if TYPE_CHECKING:
    from vac.backends.watch import Watcher
    from vac.config.model import MachineType, Settings
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


class Backend(abc.ABC):
    """Base class of every backend. Subclasses set NAME, MODELS and CAPABILITIES."""

    NAME: ClassVar[str]
    MODELS: ClassVar[FrozenSet[str]]
    CAPABILITIES: ClassVar[Capabilities]

    def __init__(self, settings: Settings):
        self.settings = settings

    def prepare_host(self) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Optional once-per-cycle host preparation (networks, cgroup parents). No-op here."""

    @abc.abstractmethod
    def probe(self) -> Probe:
        """Is the engine/library usable? Must not raise; must return within seconds."""

    @abc.abstractmethod
    def create(self, spec: MachineSpec) -> str:
        """Start the machine; return its backend id (recorded by the backend in backend.json;
        jobfeatures/job_id stays the factory's UUID, which user_data and MJF already carry).

        Raises:
            BackendError: creation failed; nothing of the machine is left running.
        """

    @abc.abstractmethod
    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        """Stop the machine and release everything it holds. Absent counts as success.
        It reads nothing of the machine's last state: finishing collects before it."""

    @abc.abstractmethod
    def list_machines(self) -> List[MachineStatus]:
        """Every machine this backend holds that Vac owns (by label/name and factory)."""

    @abc.abstractmethod
    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        """Current state and CPU seconds of one machine; SHUTDOWN if the backend has none."""

    def watch(self, on_end: Callable[[str], None]) -> Optional[Watcher]:
        """A started Watcher calling on_end(machine name) as soon as a machine of this
        factory ends, or None if this backend cannot tell (vacd then relies on cycles)."""
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
