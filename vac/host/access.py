# SPDX-License-Identifier: BSD-2-Clause
"""Can another user (QEMU's) reach a file? The first directory on the way it cannot enter.

Used by `vac doctor` before anything runs and by the libvirt backend when QEMU reports
"Permission denied", so that both say the same thing: which directory, its mode, what to do.
Mode bits only (ACLs and SELinux labels are not read).
"""
from __future__ import annotations

import os
import pwd
import re
import stat
from typing import Optional, Sequence, Tuple

QEMU_CONF = "/etc/libvirt/qemu.conf"
QEMU_USERS = ("qemu", "libvirt-qemu")  # EL9's and Debian's defaults when qemu.conf names none


def qemu_user(conf_path: str = QEMU_CONF) -> Optional[pwd.struct_passwd]:
    """The user QEMU runs as: qemu.conf's `user =`, else the distribution's default."""
    names: Sequence[str] = QEMU_USERS
    try:
        with open(conf_path, encoding="utf-8", errors="replace") as f:
            found = re.findall(r'^\s*user\s*=\s*"([^"]+)"', f.read(), re.M)
        if found:
            names = [found[-1]]
    except OSError:
        pass
    for name in names:
        try:
            if name.startswith("+") and name[1:].isdigit():
                return pwd.getpwuid(int(name[1:]))
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def first_barrier(path: str, uid: int, gids: Sequence[int]) -> Optional[Tuple[str, int, int]]:
    """The first directory from / down to path that uid (with gids) cannot enter:
    (directory, its mode, its owner uid), or None."""
    if uid == 0:
        return None
    current = "/"
    for part in [p for p in os.path.abspath(path).split("/") if p]:
        current = os.path.join(current, part)
        try:
            st = os.stat(current)
        except OSError:
            return None  # what does not exist yet is another check's business
        if not stat.S_ISDIR(st.st_mode):
            return None
        if st.st_uid == uid:
            allowed = st.st_mode & stat.S_IXUSR
        elif st.st_gid in gids:
            allowed = st.st_mode & stat.S_IXGRP
        else:
            allowed = st.st_mode & stat.S_IXOTH
        if not allowed:
            return current, stat.S_IMODE(st.st_mode), st.st_uid
    return None


def barrier_for(user: pwd.struct_passwd, paths: Sequence[str]) -> Optional[Tuple[str, str]]:
    """(the path, a sentence naming the directory user cannot enter and the fix), or None."""
    gids = os.getgrouplist(user.pw_name, user.pw_gid)
    for path in paths:
        found = first_barrier(path, user.pw_uid, gids)
        if found is not None:
            where, mode, owner = found
            return path, (f"the QEMU user {user.pw_name} cannot enter {where} (mode {mode:04o}, "
                          f"owner uid {owner}); fix: chmod o+x {where} (or a state_dir whose "
                          "parents all have o+x)")
    return None


def explain_qemu_denied(paths: Sequence[str], conf_path: str = QEMU_CONF) -> str:
    """Why QEMU was denied one of paths, as a sentence, or "" if mode bits do not say."""
    user = qemu_user(conf_path)
    if user is None:
        return ""
    found = barrier_for(user, paths)
    return found[1] if found else ""
