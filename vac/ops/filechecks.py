# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the local files each machinetype needs: the user_data template,
every user_data_file_XXX, kernel and initrd; each resolved as vacd resolves it (absolute, else
under <machinetype_path>/files/) and read as vacd reads it (as root). A local root_image is
checked by vac.ops.backendchecks.file_image (whether the engine answers or not).

A user_data URL is not a local file: the first creation fetches it. Which files a
machinetype reads and when one cannot be read is vac.config.hostcheck's rule (the one
`vac config check` applies too); this module gives each finding its doctor line and fix.
Never raises: every finding is a line.
"""
from __future__ import annotations

import os
from typing import List

from vac.config import hostcheck
from vac.config.model import MachineType
from vac.ops.checks import FAIL, OK, Check


def machinetype_files(mt: MachineType) -> List[Check]:
    """One line per local file of the machinetype: there and readable, or what to do."""
    return [_file(mt, option, path) for option, _, path in hostcheck.local_files(mt)
            if option != "root_image"]     # vac.ops.backendchecks.file_image checks it


def _file(mt: MachineType, option: str, path: str) -> Check:
    name = f"{option} {mt.name}"
    where = f"[machinetype {mt.name}] {option}"
    if not path:
        return Check(name, FAIL, f"{where} is empty", f"name a file in {where}, or remove it")
    problem, fix = hostcheck.unreadable(path)
    if problem is None:
        return Check(name, OK, path)
    if fix == "name a file, not a directory":
        fix = f"name a file, not a directory, in {where}"
    elif fix is None:
        fix = (f"put the file at {path}, or correct {where} (a name without a leading / is "
               f"under {os.path.join(mt.machinetype_path, 'files')})")
    return Check(name, FAIL, f"{where}: {path} {problem}, so every creation of {mt.name} fails",
                 fix)
