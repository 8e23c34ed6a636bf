# SPDX-License-Identifier: BSD-2-Clause
"""Rootless Podman: `podman` machines run by the non-root podman_user's own Podman.

That user's Podman API service (`podman system service`, by default on
unix:///run/user/<uid>/podman/podman.sock) makes every container; no root daemon runs them.
Each container gets the user namespace `nomap`: its root is the first id of the user's
subordinate ranges (/etc/subuid, /etc/subgid), never root and never the user itself, so a
payload that escapes its container owns nothing but its machine's joboutputs/. For that:

- the user must exist, not be root, and have a range in /etc/subuid and in /etc/subgid;
- the container's output goes to a file of the engine's (log driver k8s-file), which Vac reads
  back through the API as the machine's console.log: Podman's default on a systemd host is
  journald, which keeps what a system user's containers print (uids below 1000) in the
  system journal, where that user's Podman cannot read it back: console.log stayed empty;
- joboutputs/ is handed to the container's root (the first subordinate uid and gid) and every
  bind source must be reachable by that id and by the user (whose runtime mounts them);
- the engine's cgroup limits apply only where `podman info` (libpod's /info) lists the
  controller for the user: on cgroup v1 none (memory, CPU and pids limits are not applied;
  vac doctor says so and backend.json records it); a machine has no cgroup parent of its own,
  and its CPU seconds are those of its processes as /proc counts them while it runs.
"""
from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from vac.errors import BackendError
from vac.host import procs

NAME = "podman"
SOCKET = "unix:///run/user/{uid}/podman/podman.sock"
SUBUID, SUBGID = "/etc/subuid", "/etc/subgid"
USERNS = "nomap"           # the user's own id is not mapped: container root is a subuid
LOG_DRIVER = "k8s-file"    # not journald: the user must be able to read the output back
LIMITS = ("memory", "cpu", "pids")
LIBPOD_INFO = "/v4.0.0/libpod/info"


@dataclass(frozen=True)
class Rootless:
    user: str
    uid: int
    gid: int
    subuid: Tuple[int, int]     # (first id, count)
    subgid: Tuple[int, int]

    @property
    def payload_uid(self) -> int:
        """The host uid of a container's root."""
        return self.subuid[0]

    @property
    def payload_gid(self) -> int:
        return self.subgid[0]


def socket_of(uid: int) -> str:
    """The default API address of a user's rootless Podman."""
    return SOCKET.format(uid=int(uid))


def sub_range(path: str, user: str, uid: int) -> Optional[Tuple[int, int]]:
    """The user's first subordinate range in /etc/subuid or /etc/subgid text, None if none."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] in (user, str(uid)) and parts[1].isdigit() and \
                parts[2].isdigit() and int(parts[2]) > 0:
            return int(parts[1]), int(parts[2])
    return None


def resolve(user: str, subuid: str = SUBUID, subgid: str = SUBGID) -> Rootless:
    """The user with its ranges.

    Raises:
        BackendError: no such user, the user is root, or a range is missing.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise BackendError(NAME, f"podman_user {user!r} does not exist") from None
    if entry.pw_uid == 0:
        raise BackendError(NAME, f"podman_user {user!r} is root; rootless Podman needs a "
                                 f"non-root user (leave podman_user unset for rootful)")
    ranges = []
    for path in (subuid, subgid):
        found = sub_range(path, user, entry.pw_uid)
        if found is None:
            raise BackendError(NAME, f"podman_user {user} has no range in {path}: "
                                     f"usermod --add-subuids/--add-subgids")
        ranges.append(found)
    return Rootless(user, entry.pw_uid, entry.pw_gid, ranges[0], ranges[1])


def prepare(rootless: Rootless, host_config: Dict[str, Any], name: str) -> Dict[str, Any]:
    """The host config for the user's Podman: user namespace `nomap`, no cgroup parent, the
    output in a file of the engine's (LOG_DRIVER), every read-write bind source (joboutputs/,
    tmp_binds, scratch) handed to the container's root, and every bind source reachable by the
    user (its runtime mounts them) and by that root.

    Raises:
        BackendError: naming the directory that blocks and whom.
    """
    adjusted = dict(host_config)
    adjusted["UsernsMode"] = USERNS
    adjusted["LogConfig"] = {"Type": LOG_DRIVER, "Config": {}}
    adjusted.pop("CgroupParent", None)
    who = ((rootless.uid, [rootless.gid], f"podman_user {rootless.user}"),
           (rootless.payload_uid, [rootless.payload_gid],
            f"the container's root (uid {rootless.payload_uid})"))
    for mount in adjusted.get("Mounts") or []:
        source = str(mount.get("Source") or "")
        if not mount.get("ReadOnly"):
            try:
                os.chown(source, rootless.payload_uid, rootless.payload_gid,
                         follow_symlinks=False)
            except OSError as e:
                raise BackendError(NAME, f"cannot hand {source} to the container's root "
                                         f"(uid {rootless.payload_uid}): {e}", name) from e
        for uid, gids, whom in who:
            blocked = procs.unsearchable_ancestor(source, uid, gids)
            if blocked:
                raise BackendError(NAME, f"{whom} cannot reach {source}: {blocked} is not "
                                         f"searchable by it (chmod o+x {blocked})", name)
    return adjusted


def engine_info(api: Any) -> Dict[str, Any]:
    """libpod's /info `host` part ({} if the engine does not answer it)."""
    try:
        reply = api.get(api.base_url + LIBPOD_INFO, timeout=api.timeout)
        reply.raise_for_status()
        host = reply.json().get("host")
    except Exception:  # noqa: BLE001 (hostile or old engine: no facts, no limits claimed)
        return {}
    return host if isinstance(host, dict) else {}


def limits_applied(host: Dict[str, Any]) -> List[str]:
    """Which of memory, cpu, pids the engine can limit for this user (from cgroupControllers:
    [] on cgroup v1 rootless)."""
    controllers = host.get("cgroupControllers")
    if not isinstance(controllers, list):
        return []
    return [name for name in LIMITS if name in controllers]


def limits_text(host: Dict[str, Any]) -> str:
    """What `podman info` says of the limits, in words."""
    applied = limits_applied(host)
    missing = [name for name in LIMITS if name not in applied]
    facts = f"cgroup {host.get('cgroupVersion', '?')}, manager " \
            f"{host.get('cgroupManager', '?')}"
    if not missing:
        return f"memory, cpu and pids limits applied ({facts})"
    return f"{', '.join(missing)} limits NOT applied ({facts}; controllers " \
           f"{', '.join(applied) or 'none'})"


def tree_cpu_seconds(pid: int, proc_root: str = "/proc") -> Optional[float]:
    """CPU seconds of a process and its descendants (their own and their waited-for
    children's), None if the process has gone."""
    table: Dict[int, Tuple[int, int]] = {}
    for entry in os.listdir(proc_root):
        if not entry.isdigit():
            continue
        try:
            with open(os.path.join(proc_root, entry, "stat")) as f:
                text = f.read()
            rest = text[text.rindex(")") + 2:].split()
            table[int(entry)] = (int(rest[1]), sum(int(t) for t in rest[11:15]))
        except (OSError, ValueError, IndexError):
            continue
    if pid not in table:
        return None
    children: Dict[int, List[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    ticks, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        ticks += table[current][1]
        todo.extend(children.get(current, []))
    return ticks / os.sysconf("SC_CLK_TCK")
