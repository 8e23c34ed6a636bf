# SPDX-License-Identifier: BSD-2-Clause
"""What a configuration that loaded needs of this host, checked: the local files each
machinetype reads (resolved as vacd resolves them), processors enough for its smallest
machine, a share that is not 0. (The pipes not fetched yet: vac.config.pipes' PipeResult.)

vac.config.load rejects what is wrong in the text itself; what is checked here depends on the
host (a file not there yet, a smaller host sharing the space's configuration), so vacd does
not refuse the whole configuration for it: `vac config check` reports it, each finding
located like a load problem. local_files() and unreadable() are the one rule of which files
a machinetype reads and when vacd cannot read one; `vac doctor` (vac.ops.filechecks) uses them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from vac.config.model import SECTION, Config, MachineType
from vac.errors import Problem

REMOTE = ("https://", "http://")


@dataclass
class Findings:
    """Errors (something cannot work here) and warnings (it works, perhaps not as meant)."""

    errors: List[Problem] = field(default_factory=list)
    warnings: List[Problem] = field(default_factory=list)


def local_files(mt: MachineType) -> List[Tuple[str, str, str]]:
    """(option, value as given, path as vacd resolves it; "" for an empty name) of each local
    file mt reads: user_data and user_data_file_* (not URLs), a local root_image, kernel and
    (with a kernel) initrd."""
    found = []
    if mt.user_data and not mt.user_data.startswith(REMOTE):
        found.append(("user_data", mt.user_data, mt.files_path(mt.user_data)))
    for key, name in sorted(mt.user_data_files.items()):
        found.append((f"user_data_file_{key}", name, mt.files_path(name) if name else ""))
    if mt.root_image and "://" not in mt.root_image:
        found.append(("root_image", mt.root_image, mt.files_path(mt.root_image)))
    if mt.kernel:
        found.append(("kernel", mt.kernel, mt.files_path(mt.kernel)))
        if mt.initrd:       # vacd boots an initrd only with a kernel
            found.append(("initrd", mt.initrd, mt.files_path(mt.initrd)))
    return found


def unreadable(path: str, directory_ok: bool = False) -> Tuple[Optional[str], Optional[str]]:
    """(why vacd, as root, could not read path; its fix, None for "put it there"), or
    (None, None) when it can. directory_ok: a root_image may be a directory (Apptainer)."""
    if not os.path.lexists(path):
        return "does not exist", None
    if not os.path.exists(path):
        return f"is a symbolic link to {os.readlink(path)}, which does not exist", None
    if os.path.isdir(path):
        return (None, None) if directory_ok else ("is a directory",
                                                  "name a file, not a directory")
    if not os.path.isfile(path):
        return "is not a regular file", None
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError as e:
        if os.geteuid() != 0:
            return (f"cannot be read by this user ({e.strerror})",
                    "run vac doctor as root, as vacd runs")
        return f"cannot be read ({e.strerror})", f"chmod u+r {path}; check its SELinux label"
    except OSError as e:
        return f"cannot be read ({e.strerror})", f"check the filesystem holding {path}"
    return None, None


def check(config: Config) -> Findings:
    """Everything this host lacks for the configuration to work as written."""
    found = fit(config)
    for _, mt in sorted(config.machinetypes.items()):
        _files(config, mt, found)
    return found


def fit(config: Config) -> Findings:
    """check() without the files (vac doctor checks those its own way): processors enough for
    each machinetype's smallest machine, and every share of 0 named."""
    found = Findings()
    for name, mt in sorted(config.machinetypes.items()):
        _processors(config, mt, found)
        if mt.target_share <= 0:
            found.warnings.append(_at(config, mt, "target_share",
                                      f"machinetype {name} has target_share 0: it gets no "
                                      "slots"))
    return found


def _files(config: Config, mt: MachineType, found: Findings) -> None:
    for option, given, path in local_files(mt):
        if not path:
            found.errors.append(_at(config, mt, option, "the file name is empty"))
            continue
        problem, _ = unreadable(path, directory_ok=option == "root_image")
        if problem is None:
            continue
        shown = path if path == given else f"{given} (resolved: {path})"
        if problem.startswith("cannot be read by this user"):   # vacd runs as root
            found.warnings.append(_at(config, mt, option, f"{shown} {problem}"))
        else:
            found.errors.append(_at(config, mt, option, f"{shown} {problem}: every creation "
                                    f"of {mt.name} fails"))


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
