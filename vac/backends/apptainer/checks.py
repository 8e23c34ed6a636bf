# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the Apptainer backend: each machinetype's root_image, the
singularity_user with its subordinate id ranges, and the fix of a failed probe found by asking
each of its parts again (binary, user, cgroups). Never raises: every failure is a line."""
from __future__ import annotations

import os
import pwd
from typing import List, Optional

from vac.backends.apptainer.backend import ApptainerBackend
from vac.backends.checks import FAIL, OK, WARN, BackendChecks, Check, file_image
from vac.config.model import MachineType, Settings
from vac.errors import VacError

APPTAINER_BINARY_FIX = "install apptainer (dnf install apptainer), or set singularity_path " \
                       "to its binary"
CGROUP_FIX = "run vacd as root on a host whose cgroup controllers are delegated"


class ApptainerChecks(BackendChecks):
    """Images are files or URLs (no engine needed), then the user."""

    HOST_CGROUPS = True

    def engine_fix(self, version: Optional[str]) -> str:
        try:
            binary = ApptainerBackend(self.settings).binary()
        except (VacError, OSError):
            return APPTAINER_BINARY_FIX
        user = apptainer_user(self.settings)[0]
        if user.status != OK:
            return user.fix
        if version:             # the binary ran and the user is fine: the cgroups failed
            return CGROUP_FIX
        return f"run {binary} version by hand and correct what it says"

    def lines(self, machinetypes: List[MachineType], usable: bool) -> List[Check]:
        return [file_image(mt, self.settings) for mt in machinetypes] + \
            apptainer_user(self.settings)


def apptainer_user(settings: Settings, subuid: str = "/etc/subuid",
                   subgid: str = "/etc/subgid") -> List[Check]:
    """singularity_user exists, is not root; its subordinate id ranges (for --fakeroot)."""
    name = settings.singularity_user
    if not name:
        return [Check("apptainer-user", FAIL, "singularity_user is not set",
                      "useradd -r vacsngly; singularity_user = vacsngly in [settings]")]
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        return [Check("apptainer-user", FAIL, f"singularity_user {name} does not exist",
                      f"useradd -r -m {name}")]
    if user.pw_uid == 0:
        return [Check("apptainer-user", FAIL, f"singularity_user {name} is root",
                      "a non-root user: vacd kills its processes outside machines")]
    lines = [Check("apptainer-user", OK, f"{name} (uid {user.pw_uid})")]
    for path in (subuid, subgid):
        count = sub_ids(path, name, user.pw_uid)
        if count:
            lines.append(Check(f"apptainer-{os.path.basename(path)}", OK,
                               f"{name} has {count} ids in {path}"))
        else:
            lines.append(Check(f"apptainer-{os.path.basename(path)}", WARN,
                               f"{name} has no range in {path} (only --fakeroot needs one)",
                               f"usermod --add-subuids 100000-165535 --add-subgids "
                               f"100000-165535 {name}"))
    return lines


def sub_ids(path: str, name: str, uid: int) -> int:
    """How many subordinate ids a user (by name or uid) has in /etc/subuid or /etc/subgid."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            rows = [line.strip().split(":") for line in f]
    except OSError:
        return 0
    return sum(int(r[2]) for r in rows if len(r) == 3 and r[0] in (name, str(uid)) and
               r[2].isdigit())


CHECKS = ApptainerChecks
