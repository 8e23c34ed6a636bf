# SPDX-License-Identifier: BSD-2-Clause
"""vac.conf and /etc/vac.d parsing into frozen Settings and MachineType objects.

The files are read in the original's order (later wins); every value remembers the file and
section it came from so `vac config check` can say so. Problems are collected, not raised one
by one, so a site admin sees all of them at once. The values of each section are interpreted
and checked by vac.configcheck; this module reads the files and makes the frozen objects.
"""
from __future__ import annotations

import configparser
import glob
import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from vac.configcheck import (
    Builder,
    check_legacy_sections,
    machinetype_sections,
    machinetype_values,
    pipe_section_values,
    prefix_of,
    settings_values,
)
from vac.errors import ConfigError, Problem
from vac.hostinfo import HostFacts
from vac.paths import CONFIG_DIR_DEFAULT, CONFIG_FILES_DEFAULT, Paths

# (value, origin) as read from a file, a pipe section or a pipe document.
RawValue = Tuple[str, str]
SectionKey = Tuple[str, str]


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
    max_creations_per_cycle: int
    enable_fake_backend: bool
    singularity_path: str
    docker_url: str
    backend_timeout_seconds: float
    libvirt_uri: str
    libvirt_virt_type: str
    libvirt_shutdown_wait_seconds: float
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
    machinetype_path: str
    docker_network_mode: str
    docker_hard_cpu: bool
    docker_hard_memory: bool
    docker_pids_limit: int
    docker_pull_timeout_seconds: int
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


@dataclass
class RawConfig:
    """The merged INI contents with per-value origins, before any interpretation."""

    sections: Dict[SectionKey, Dict[str, RawValue]] = field(default_factory=dict)
    files: List[str] = field(default_factory=list)
    section_origins: Dict[SectionKey, str] = field(default_factory=dict)

    def origin(self, kind: str, name: str = "") -> str:
        return self.section_origins.get((kind, name), f"[{kind} {name}]".replace(" ]", "]"))

    def section(self, kind: str, name: str = "") -> Dict[str, RawValue]:
        return self.sections.get((kind, name), {})

    def of_kind(self, kind: str) -> List[str]:
        return [name for (k, name) in self.sections if k == kind]


def config_files(explicit: Optional[Sequence[str]] = None, etc_dir: str = CONFIG_DIR_DEFAULT,
                 files: Sequence[str] = CONFIG_FILES_DEFAULT) -> List[str]:
    """The files to read, in order: --config files if given, else vac.d/*.conf then vac.conf."""
    if explicit:
        return list(explicit)
    found = sorted(glob.glob(os.path.join(glob.escape(etc_dir), "*.conf")))
    return found + [f for f in files if os.path.exists(f)]


def read_raw(paths: Sequence[str]) -> RawConfig:
    """Parse and merge INI files; later files win option by option.

    Raises:
        ConfigError: a file cannot be read or is not valid INI.
    """
    raw = RawConfig()
    problems = []
    for path in paths:
        parser = configparser.RawConfigParser(strict=False, interpolation=None)
        try:
            with open(path) as f:
                parser.read_file(f, source=path)
        except FileNotFoundError:
            continue
        except (OSError, configparser.Error, UnicodeDecodeError) as e:
            problems.append(Problem(f"cannot parse: {_one_line(e)}", file=path))
            continue
        raw.files.append(path)
        for title in parser.sections():
            key = _section_key(title)
            target = raw.sections.setdefault(key, {})
            raw.section_origins[key] = f"{path} [{title}]"
            for option, value in parser.items(title):
                target[option] = (value.strip(), f"{path} [{title}]")
    if problems:
        raise ConfigError(problems)
    return raw


def _section_key(title: str) -> SectionKey:
    kind, _, name = title.strip().partition(" ")
    return kind.lower(), name.strip().lower()


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def build(raw: RawConfig, host: HostFacts,
          pipe_values: Optional[Mapping[str, Mapping[str, RawValue]]] = None,
          pipe_warnings: Sequence[str] = ()) -> Config:
    """Interpret merged INI values (and validated pipe values) into a Config.

    Args:
        pipe_values: machinetype name -> {option: (value, origin)} from vac.pipes.

    Raises:
        ConfigError: with every problem found, each naming its file, section and option.
    """
    b = Builder()
    b.warnings.extend(pipe_warnings)
    check_legacy_sections(raw, b)
    settings = _build_settings(raw, host, b)
    pipes = _build_pipe_sections(raw, b)
    machinetypes = {}
    if settings is not None:
        for name, section in machinetype_sections(raw, pipes, pipe_values or {}, b).items():
            prefix = prefix_of(name, pipes) if name in (pipe_values or {}) else None
            origin = raw.origin("machinetype", name) if ("machinetype", name) in \
                raw.sections else raw.origin("vmtype", name)
            mt = _build_machinetype(name, section, settings, prefix, origin, b)
            if mt is not None:
                machinetypes[name] = mt
    if b.problems or settings is None:
        raise ConfigError(b.problems or [Problem("no usable [settings]")])
    return Config(settings=settings, machinetypes=machinetypes, pipes=tuple(pipes.values()),
                  warnings=tuple(b.warnings), files=tuple(raw.files))


def _build_settings(raw: RawConfig, host: HostFacts, b: Builder) -> Optional[Settings]:
    found = settings_values(raw, host, b)
    if found is None:
        return None
    values, origins = found
    return Settings(origins=origins, **values)


def _build_pipe_sections(raw: RawConfig, b: Builder) -> Dict[str, PipeSection]:
    pipes = {}
    for prefix in raw.of_kind("vacuum_pipe"):
        fields = pipe_section_values(raw, prefix, b)
        if fields is not None:
            pipes[prefix] = PipeSection(**fields)
    return pipes


def _build_machinetype(name: str, section: Mapping[str, RawValue], settings: Settings,
                       prefix: Optional[str], origin: str,
                       b: Builder) -> Optional[MachineType]:
    found = machinetype_values(name, section, settings, prefix, origin, b)
    if found is None:
        return None
    values, origins = found
    return MachineType(name=name, origins=origins, **values)


def pipe_sections(raw: RawConfig) -> Tuple[PipeSection, ...]:
    """The usable [vacuum_pipe] sections of raw; build() reports the unusable ones."""
    return tuple(_build_pipe_sections(raw, Builder()).values())
