# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the local files each machinetype needs: the user_data template,
every user_data_file_XXX, kernel and initrd; each resolved as vacd resolves it (absolute, else
under <machinetype_path>/files/) and read as vacd reads it (as root). A local root_image is
checked by vac.ops.backendchecks.file_image (whether the engine answers or not).

A user_data URL is not a local file: the first creation fetches it. Never raises: every
finding is a line.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from vac.config.model import MachineType
from vac.ops.checks import FAIL, OK, Check

URL_PREFIXES = ("http://", "https://")


def local_files(mt: MachineType) -> List[Tuple[str, str]]:
    """(option, the path vacd reads) for every local file the machinetype names."""
    found: List[Tuple[str, str]] = []
    if mt.user_data and not mt.user_data.startswith(URL_PREFIXES):
        found.append(("user_data", mt.files_path(mt.user_data)))
    for key, name in sorted(mt.user_data_files.items()):
        found.append((f"user_data_file_{key}", mt.files_path(name) if name else ""))
    if mt.kernel:
        found.append(("kernel", mt.files_path(mt.kernel)))
        if mt.initrd:
            found.append(("initrd", mt.files_path(mt.initrd)))
    return found


def machinetype_files(mt: MachineType) -> List[Check]:
    """One line per local file of the machinetype: there and readable, or what to do."""
    return [_file(mt, option, path) for option, path in local_files(mt)]


def _file(mt: MachineType, option: str, path: str) -> Check:
    name = f"{option} {mt.name}"
    where = f"[machinetype {mt.name}] {option}"
    if not path:
        return Check(name, FAIL, f"{where} is empty", f"name a file in {where}, or remove it")
    problem, fix = _unreadable(path)
    if problem is None:
        return Check(name, OK, path)
    if fix == "name a file, not a directory":
        fix = f"name a file, not a directory, in {where}"
    elif fix is None:
        fix = (f"put the file at {path}, or correct {where} (a name without a leading / is "
               f"under {os.path.join(mt.machinetype_path, 'files')})")
    return Check(name, FAIL, f"{where}: {path} {problem}, so every creation of {mt.name} fails",
                 fix)


def _unreadable(path: str) -> Tuple[Optional[str], Optional[str]]:
    """(why vacd could not read path, its fix; None for "put it there"), or (None, None)."""
    if not os.path.lexists(path):
        return "does not exist", None
    if not os.path.exists(path):
        return f"is a symbolic link to {os.readlink(path)}, which does not exist", None
    if os.path.isdir(path):
        return "is a directory", "name a file, not a directory"
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
