# SPDX-License-Identifier: BSD-2-Clause
"""vac.conf and /etc/vac.d parsing into frozen Settings and MachineType objects.

The files are read in the original's order (later wins); every value remembers the file and
section it came from so `vac config check` can say so. Problems are collected, not raised one
by one, so a site admin sees all of them at once. The values of each section are interpreted
and checked by vac.config.check; this module reads the files and makes the frozen objects.
"""
from __future__ import annotations

import configparser
import glob
import os
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from vac.config import inifile, presence
from vac.config.builder import Builder
from vac.config.check import (
    check_legacy_sections,
    machinetype_sections,
    machinetype_values,
    pipe_section_values,
    prefix_of,
    settings_values,
)
from vac.config.model import (
    Config,
    MachineType,
    PipeSection,
    RawConfig,
    RawValue,
    SectionKey,
    Settings,
)
from vac.errors import ConfigError, ConfigMissing, Problem
from vac.host.facts import HostFacts
from vac.paths import CONFIG_DIR_DEFAULT, CONFIG_FILES_DEFAULT


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
        ConfigMissing: a file named does not exist, or no file at all (not configured yet).
        ConfigError: a file cannot be read or is not valid INI.
    """
    if not paths:
        raise ConfigMissing(CONFIG_FILES_DEFAULT[0], _missing(CONFIG_FILES_DEFAULT[0]))
    raw = RawConfig()
    problems = []
    for path in paths:
        try:
            parser, lines = inifile.read(path)
        except FileNotFoundError:
            raise ConfigMissing(path, _missing(path)) from None
        except (OSError, configparser.Error, UnicodeDecodeError) as e:
            problems.append(Problem(f"cannot parse: {_one_line(e)}", file=path))
            continue
        raw.files.append(path)
        for title in parser.sections():
            key = _section_key(title)
            target = raw.sections.setdefault(key, {})
            origin = f"{path} [{title}]"
            raw.section_origins[key] = origin
            raw.lines.update({(origin, option): line for (t, option), line in lines.items()
                              if t == title})
            for option, value in parser.items(title):
                if "\x00" in value or "\x00" in option or "\x00" in title:
                    problems.append(Problem("contains a NUL byte; refused", file=path,
                                            section=title.replace("\x00", "\\0"),
                                            option=option.replace("\x00", "\\0")))
                    continue
                target[option] = (value.strip(), origin)
    if problems:
        raise ConfigError(problems)
    return raw


def _missing(path: str) -> str:
    """What ConfigMissing says: the default file is "not configured yet", a named one missing."""
    if path == CONFIG_FILES_DEFAULT[0]:
        return presence.ABSENT
    return f"--config {path}: no such file"


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
        pipe_values: machinetype name -> {option: (value, origin)} from vac.config.pipes.

    Raises:
        ConfigError: with every problem found, each naming its file, section and option.
    """
    b = Builder(raw.lines)
    for text in pipe_warnings:
        b.warn(text)
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
                  warnings=tuple(b.warnings), files=tuple(raw.files), findings=tuple(b.notes),
                  lines=dict(raw.lines))


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
