# SPDX-License-Identifier: BSD-2-Clause
"""The configuration's frozen objects: Settings, MachineType, PipeSection, Config, RawConfig.

vac.config.load makes them from the files and vac.config.check interprets their values; both
import this module, which imports neither.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

from vac.errors import Problem
from vac.paths import Paths

# (value, origin) as read from a file, a pipe section or a pipe document.
RawValue = Tuple[str, str]
SectionKey = Tuple[str, str]
# The key of a MachineType's own section ("FILE [machinetype NAME]") in its origins.
SECTION = ""


@dataclass(frozen=True)
class Settings:
    """The [settings] section, resolved and validated."""

    vac_space: str
    factory_name: str
    factories: Tuple[str, ...]
    udp_timeout_seconds: float
    mb_per_processor: int
    hs06_per_processor: Optional[float]
    processors_per_superslot: int
    total_processors: int
    host_processors: int
    overload_per_processor: float
    shutdown_time: Optional[int]
    draining: bool
    gocdb_sitename: Optional[str]
    gocdb_cert_file: Optional[str]
    gocdb_key_file: Optional[str]
    description: Optional[str]
    version_logger: int
    vacmon_hostport: Tuple[str, ...]
    volume_group: Optional[str]
    disk_gb_per_processor: Optional[int]
    root_public_key: str
    singularity_user: Optional[str]
    fix_networking: bool
    forward_dev: Optional[str]
    state_dir: str
    cycle_seconds: float
    vacquery_port: int
    vacquery_address: str
    metrics_address: str
    metrics_port: Optional[int]
    status_address: str
    status_port: Optional[int]
    gocdb_url: str
    max_creations_per_cycle: int
    docker_parallel_creations: int
    apptainer_parallel_creations: int
    libvirt_parallel_creations: int
    enable_fake_backend: bool
    singularity_path: str
    docker_url: str
    backend_timeout_seconds: float
    libvirt_uri: str
    libvirt_virt_type: str
    libvirt_shutdown_wait_seconds: float
    yield_load_per_processor: Optional[float] = None
    yield_grace_seconds: float = 300.0
    yield_pause_seconds: float = 600.0
    joboutputs_file_mb: int = 1
    joboutputs_machine_mb: int = 16
    joboutputs_machine_files: int = 64
    pressure_cpu_some: Optional[float] = None
    pressure_memory_some: Optional[float] = 20.0
    pressure_io_full: Optional[float] = 40.0
    shed_memory_full: Optional[float] = None
    shed_grace_seconds: float = 60.0
    disk_floor_gb: float = 0.5
    disk_floor_fraction: float = 0.02
    disk_overcommit: float = 1.0
    memory_overcommit: Optional[float] = None
    podman_url: str = "unix:///run/podman/podman.sock"
    podman_parallel_creations: int = 4
    podman_user: Optional[str] = None
    machinefeatures_options: Mapping[str, str] = field(default_factory=dict)
    user_data_options: Mapping[str, str] = field(default_factory=dict)
    user_data_files: Mapping[str, str] = field(default_factory=dict)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def paths(self) -> Paths:
        return Paths(self.state_dir)

    @property
    def site(self) -> str:
        """gocdb_sitename, else the space name minus its first label (the original's rule)."""
        return self.gocdb_sitename or self.vac_space.partition(".")[2] or self.vac_space


@dataclass(frozen=True)
class MachineType:
    """One [machinetype NAME] (local, from a pipe, or both), resolved and validated."""

    name: str
    target_share: float
    machine_model: str
    root_image: Optional[str]
    user_data: Optional[str]
    user_data_proxy: bool
    legacy_proxy: bool
    backoff_seconds: int
    fizzle_seconds: int
    max_wallclock_seconds: int
    min_wallclock_seconds: int
    min_processors: int
    max_processors: int
    machines_dir_days: float
    heartbeat_file: Optional[str]
    heartbeat_seconds: int
    accounting_fqan: Optional[str]
    machinegroup: str
    cvmfs_repositories: Tuple[str, ...]
    tmp_binds: Tuple[str, ...]
    container_command: str
    disk_gb_per_processor: Optional[int]
    image_signing_dn: Optional[str]
    root_device: str
    scratch_device: str
    shutdown_message_grace_seconds: Optional[int]
    mb_per_processor: int
    machinetype_path: str
    docker_network_mode: str
    docker_network: Optional[str]
    docker_ulimits: Tuple[str, ...]
    docker_hard_cpu: bool
    docker_hard_memory: bool
    docker_pids_limit: int
    docker_pull_timeout_seconds: int
    docker_pull_seconds: Optional[int]
    kernel: Optional[str]
    initrd: Optional[str]
    cmdline: Optional[str]
    fake_run_seconds: float
    fake_create_error: Optional[str]
    fake_cpu_per_second: float
    fake_shutdown_message: Optional[str]
    user_data_options: Mapping[str, str] = field(default_factory=dict)
    user_data_files: Mapping[str, str] = field(default_factory=dict)
    pipe: Optional[str] = None
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    smbios_product: Optional[str] = None
    cgroup_delegate: bool = True
    config_drive: bool = True

    def memory_mb(self, processors: int) -> int:
        """The memory limit of one of its machines with this many processors, in MiB, as the
        backends set it (MachineSpec.memory_mb) and admission by memory counts it."""
        return self.mb_per_processor * processors

    def files_path(self, name: str) -> str:
        """A machinetype file: absolute as given, else under <machinetype_path>/files/."""
        return name if name.startswith("/") else os.path.join(self.machinetype_path, "files", name)


@dataclass(frozen=True)
class PipeSection:
    """A [vacuum_pipe PREFIX] section: where to fetch, its total share, inherited options."""

    prefix: str
    url: str
    target_share: float
    options: Mapping[str, RawValue]
    origin: str


@dataclass(frozen=True)
class Config:
    """Everything vac.conf (and the pipes) say, ready for the factory."""

    settings: Settings
    machinetypes: Mapping[str, MachineType]
    pipes: Tuple[PipeSection, ...] = ()
    warnings: Tuple[str, ...] = ()
    files: Tuple[str, ...] = ()
    # The warnings located (file, line, section, option), in the order of `warnings`.
    findings: Tuple[Problem, ...] = ()
    # (origin "FILE [TITLE]", option) -> line, as RawConfig.lines.
    lines: Mapping[Tuple[str, str], int] = field(default_factory=dict, compare=False)


@dataclass
class RawConfig:
    """The merged INI contents with per-value origins, before any interpretation."""

    sections: Dict[SectionKey, Dict[str, RawValue]] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)
    section_origins: Dict[SectionKey, str] = field(default_factory=dict)
    # (origin "FILE [TITLE]", option) -> line number; option "" is the section's header.
    lines: Dict[Tuple[str, str], int] = field(default_factory=dict)

    def origin(self, kind: str, name: str = "") -> str:
        return self.section_origins.get((kind, name), f"[{kind} {name}]".replace(" ]", "]"))

    def section(self, kind: str, name: str = "") -> Dict[str, RawValue]:
        return self.sections.get((kind, name), {})

    def line(self, origin: str, option: Optional[str] = None) -> Optional[int]:
        """The line of an option (or, without one, of the section header) in its file."""
        return self.lines.get((origin, option or ""))

    def of_kind(self, kind: str) -> List[str]:
        return [name for (k, name) in self.sections if k == kind]
