# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s lines for rootless Podman (settings.podman_user): the user (exists, not
root), its ranges in /etc/subuid and /etc/subgid, its Podman API service's socket, the
machine directories reachable by the user and its containers' root, and which cgroup limits
that engine can apply (none on cgroup v1: never reported as applied)."""
from __future__ import annotations

import os
import pwd
from typing import Any, List, Optional

from vac.backends.checks import FAIL, OK, PROBE_TIMEOUT, WARN, Check, one_line
from vac.backends.podman import rootless
from vac.host import procs

USERADD = "useradd -r -m -d /var/lib/{user} -s /usr/sbin/nologin {user}"


def service_fix(user: str, uid: Optional[int], url: str) -> str:
    """How to start a user's Podman API service (without systemd: as the user, detached)."""
    if uid is None:
        try:
            uid = pwd.getpwnam(user).pw_uid
        except KeyError:
            pass
    run = f"/run/user/{uid if uid is not None else '<uid>'}"
    return (f"loginctl enable-linger {user} && systemctl --user -M {user}@ enable --now "
            f"podman.socket; or without systemd: install -d -o {user} -m 700 {run} "
            f"{run}/podman && cd / && "
            f"setsid runuser -u {user} -- env XDG_RUNTIME_DIR={run} podman system service "
            f"--time=0 {url} &")


def user_lines(user: str, subuid: str = rootless.SUBUID,
               subgid: str = rootless.SUBGID) -> List[Check]:
    """The user and its subordinate ranges."""
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return [Check("podman-user", FAIL, f"podman_user {user} does not exist",
                      USERADD.format(user=user))]
    if entry.pw_uid == 0:
        return [Check("podman-user", FAIL, f"podman_user {user} is root",
                      "a non-root user, or leave podman_user unset for the rootful Podman")]
    lines = [Check("podman-user", OK, f"{user} (uid {entry.pw_uid}), rootless")]
    for path in (subuid, subgid):
        name = f"podman-{os.path.basename(path)}"
        found = rootless.sub_range(path, user, entry.pw_uid)
        if found is None:
            lines.append(Check(name, FAIL, f"{user} has no range in {path} (its containers "
                               "need one to map their ids)",
                               f"usermod --add-subuids 200000-265535 --add-subgids "
                               f"200000-265535 {user} (a range no other user has)"))
        else:
            lines.append(Check(name, OK, f"{user} has {found[1]} ids from {found[0]} in "
                               f"{path}"))
    return lines


def service_line(user: str, url: str) -> Check:
    """The user's API socket is there (the engine line says whether it answers)."""
    try:
        uid: Optional[int] = pwd.getpwnam(user).pw_uid
    except KeyError:
        uid = None
    path = url[len("unix://"):] if url.startswith("unix://") else ""
    if path and not os.path.exists(path):
        return Check("podman-service", FAIL, f"no Podman API socket of {user} at {path}",
                     service_fix(user, uid, url))
    return Check("podman-service", OK, f"{user}'s Podman API at {url}")


def limits_line(url: str, api: Any = None) -> Check:
    """Which limits the user's engine applies, from libpod's /info."""
    if api is None:
        try:
            import docker

            api = docker.APIClient(base_url=url, timeout=PROBE_TIMEOUT)
        except Exception as e:  # noqa: BLE001 (the engine line says why)
            return Check("podman-limits", WARN, f"not checked: {one_line(e)}")
    host = rootless.engine_info(api)
    if not host:
        return Check("podman-limits", WARN, "not checked: the engine gave no libpod /info")
    text = rootless.limits_text(host)
    if rootless.limits_applied(host) == list(rootless.LIMITS):
        return Check("podman-limits", OK, text)
    return Check("podman-limits", WARN, f"rootless: {text}: machines can use more memory, "
                 "CPU and processes than they are given",
                 "cgroup v2 with memory, cpu and pids delegated to the user "
                 "(systemd user@.service Delegate=), or the rootful Podman")


def reach_line(user: str, machines: str, subuid: str = rootless.SUBUID,
               subgid: str = rootless.SUBGID) -> Check:
    """The machine directories are reachable by the user (its runtime mounts the binds) and
    by its containers' root (the first subordinate uid), or every creation fails."""
    try:
        found = rootless.resolve(user, subuid, subgid)
    except Exception as e:  # noqa: BLE001 (the user lines say what is missing)
        return Check("podman-reach", WARN, f"not checked: {e}")
    existing = machines
    while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)      # vacd makes the rest, mode 0755
    probe = os.path.join(existing, "x")
    for uid, gid, whom in ((found.uid, found.gid, user),
                           (found.payload_uid, found.payload_gid,
                            f"the containers' root (uid {found.payload_uid})")):
        blocked = procs.unsearchable_ancestor(probe, uid, [gid])
        if blocked:
            return Check("podman-reach", FAIL, f"{whom} cannot reach {machines}: {blocked} "
                         "is not searchable by it (every creation would fail)",
                         f"chmod o+x {blocked}")
    return Check("podman-reach", OK, f"{machines} reachable by {user} and its containers' "
                 f"root (uid {found.payload_uid})")


def lines(settings: Any, usable: bool) -> List[Check]:
    """Every rootless line ([] when podman_user is unset: rootful)."""
    user = getattr(settings, "podman_user", None)
    if not user:
        return []
    found = user_lines(user)
    if found[0].status == FAIL:
        return found
    found.append(service_line(user, settings.podman_url))
    found.append(reach_line(user, settings.paths.machines))
    if usable:
        found.append(limits_line(settings.podman_url))
    return found
