# SPDX-License-Identifier: BSD-2-Clause
"""What a configuration that loaded needs of this host, checked: the local files each
machinetype reads, processors enough for its smallest machine, a share that is not 0, pipes
fetched at least once.

vac.config.load rejects what is wrong in the text itself; what is checked here depends on the
host (a file not there yet, a smaller host sharing the space's configuration), so vacd does
not refuse the whole configuration for it: `vac config check` reports it (and `vac doctor`
may), each finding located like a load problem.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from vac.config import pipecache
from vac.config.model import SECTION, Config, MachineType
from vac.errors import Problem

REMOTE = ("https://", "http://")
REMOTE_IMAGE = REMOTE + ("docker://",)


@dataclass
class Findings:
    """Errors (something cannot work here) and warnings (it works, perhaps not as meant)."""

    errors: List[Problem] = field(default_factory=list)
    warnings: List[Problem] = field(default_factory=list)


def local_files(mt: MachineType) -> List[Tuple[str, str, str]]:
    """(option, value as given, path as vacd resolves it) of each local file mt reads."""
    found = []
    if mt.user_data and not mt.user_data.startswith(REMOTE):
        found.append(("user_data", mt.user_data, mt.files_path(mt.user_data)))
    for key, name in sorted(mt.user_data_files.items()):
        found.append((f"user_data_file_{key}", name, mt.files_path(name) if name else ""))
    if mt.root_image and not mt.root_image.startswith(REMOTE_IMAGE) and "://" not in \
            mt.root_image:
        found.append(("root_image", mt.root_image, mt.files_path(mt.root_image)))
    for option in ("kernel", "initrd"):
        value = getattr(mt, option)
        if value:
            found.append((option, value, mt.files_path(value)))
    return found


def check(config: Config) -> Findings:
    """Everything this host lacks for the configuration to work as written."""
    found = Findings()
    for name, mt in sorted(config.machinetypes.items()):
        _files(config, mt, found)
        _processors(config, mt, found)
        if mt.target_share <= 0:
            found.warnings.append(_at(config, mt, "target_share",
                                      f"machinetype {name} has target_share 0: it gets no "
                                      "slots"))
    for section in config.pipes:
        note = _pipe_not_fetched(config, section.prefix, section.url)
        if note:
            found.warnings.append(Problem(note))
    return found


def _files(config: Config, mt: MachineType, found: Findings) -> None:
    for option, given, path in local_files(mt):
        if not path:
            found.errors.append(_at(config, mt, option, "the file name is empty"))
            continue
        shown = path if path == given else f"{given} (resolved: {path})"
        if not os.path.exists(path):
            found.errors.append(_at(config, mt, option, f"{shown} does not exist"))
        elif option != "root_image" and not os.path.isfile(path):
            found.errors.append(_at(config, mt, option, f"{shown} is not a file"))
        elif not os.access(path, os.R_OK):
            found.errors.append(_at(config, mt, option, f"{shown} cannot be read"))


def _processors(config: Config, mt: MachineType, found: Findings) -> None:
    s = config.settings
    need = mt.min_processors
    if need > s.processors_per_superslot:
        found.errors.append(_at(config, mt, "min_processors",
                                f"machinetype {mt.name} needs {need} processors per machine "
                                f"but a superslot has {s.processors_per_superslot} "
                                "(processors_per_superslot): none can be created"))
    elif need > s.total_processors:
        found.errors.append(_at(config, mt, "min_processors",
                                f"machinetype {mt.name} needs {need} processors per machine "
                                f"but this factory has {s.total_processors} "
                                "(total_processors): none can be created"))


def _pipe_not_fetched(config: Config, prefix: str, url: str) -> Optional[str]:
    if any(mt.pipe == prefix for mt in config.machinetypes.values()):
        return None
    paths = config.settings.paths
    legacy = pipecache.legacy_cache_path(paths, url)
    if os.path.exists(paths.pipe_cache(prefix)) or (legacy and os.path.exists(legacy)):
        return None
    return (f"{url} (pipe {prefix}): not fetched yet, so it gives no machinetypes until vacd's "
            "first fetch of it lands (vac config check --fetch fetches it now)")


def _at(config: Config, mt: MachineType, option: str, message: str) -> Problem:
    """A Problem at the place the option was set (else at the machinetype's section)."""
    origin = mt.origins.get(option, "default")
    line = config.lines.get((origin, option))
    if " [" not in origin:                       # a default, or a pipe's value (its URL)
        if "://" in origin:
            return Problem(message, file=origin, option=option)
        origin = mt.origins.get(SECTION, "")
        line = config.lines.get((origin, ""))
    file, _, section = origin.partition(" [")
    return Problem(message, file=file or None, section=section.rstrip("]") or None,
                   option=option, line=line)
