# SPDX-License-Identifier: BSD-2-Clause
"""Preparing a machine directory for Apptainer: mnt/, ownership, bind sources checked.

Used by vac.backends.apptainer.backend.create() before anything is started: mnt/ and
joboutputs/ are handed to singularity_user, user_data made executable, and every bind source
and the image must exist and be reachable by that user.
"""
from __future__ import annotations

import os
import pwd
import stat
from typing import List

from vac.backends.base import MachineSpec
from vac.errors import BackendError
from vac.host import procs


def prepare_directory(backend: str, spec: MachineSpec, user: pwd.struct_passwd) -> bool:
    """mkdir mnt/, hand mnt/ and joboutputs/ to the user, chmod user_data 0755.
    Returns True if there is a user_data file to bind."""
    directory = spec.directory
    for sub in ("machinefeatures", "jobfeatures", "joboutputs"):
        path = directory.file(sub)
        if os.path.islink(path) or not os.path.isdir(path):
            raise BackendError(backend, f"{path} is missing or not a directory",
                               spec.name)
    mnt = directory.file("mnt")
    try:
        os.mkdir(mnt, 0o700)
    except FileExistsError:
        if os.path.islink(mnt) or not os.path.isdir(mnt):
            raise BackendError(backend, f"{mnt} is not a directory", spec.name) from None
    try:
        for path in (mnt, directory.file("joboutputs")):
            os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
        user_data = directory.file("user_data")
        if not os.path.lexists(user_data):
            return False
        if not stat.S_ISREG(os.lstat(user_data).st_mode):
            raise BackendError(backend, f"{user_data} is not a regular file", spec.name)
        os.chmod(user_data, 0o755)
    except OSError as e:
        raise BackendError(backend, f"cannot prepare {directory.path}: {e}",
                           spec.name) from e
    return True


def check_sources(backend: str, name: str, specs: List[str], images: List[str],
                  user: pwd.struct_passwd, groups: List[int]) -> None:
    """Every bind source and the image must exist and be reachable by the user."""
    for spec_text in specs:
        source = spec_text.split(":", 1)[0]
        if "," in spec_text or spec_text.count(":") != 2:
            raise BackendError(backend, f"cannot bind {source}: ',' or ':' in the path",
                               name)
    for path in [s.split(":", 1)[0] for s in specs] + images:
        if not os.path.exists(path):
            raise BackendError(backend, f"bind source {path} does not exist", name)
        blocked = procs.unsearchable_ancestor(path, user.pw_uid, groups)
        if blocked:
            raise BackendError(backend, f"singularity_user {user.pw_name} cannot reach "
                               f"{path}: {blocked} is not searchable by it", name)
