# SPDX-License-Identifier: BSD-2-Clause
"""The rootful Podman the integration tests use (scripts/ci/setup-podman.sh): its API socket,
the local test image, a Docker-API client on that socket, and the directories of a cgroup
parent in every mounted hierarchy that has it; on cgroup v2, a machine's own limit read from
its cgroup files wherever in its own cgroup the engine wrote it; and a dead rootless API
service started again on a host without systemd (revive_rootless)."""
from __future__ import annotations

import contextlib
import os
import pwd
import subprocess
from typing import List, Optional, Tuple

from waiting import ENGINE_CALL, wait_until

from vac.backends.docker import cgroupparent
from vac.backends.podman import rootless
from vac.host import procs
from vac.host.cgroups import Cgroups, host_path

IMAGE = "vac-test/busybox:1"
ENGINE = "unix:///run/podman/podman.sock"
SERVICE_LOG = "/var/log/podman-service-{user}.log"     # as scripts/ci/setup-podman.sh has it


def sdk():
    import docker
    return docker.APIClient(base_url=ENGINE, timeout=ENGINE_CALL)


def parent_dirs(parent: str) -> List[str]:
    """The directories of a cgroup parent in every mounted hierarchy that has it."""
    path = cgroupparent.cgroup_path(parent)
    assert path, parent
    found = []
    for mount in Cgroups().hierarchies.mounts():
        directory = host_path(mount, path)
        if directory is not None and os.path.isdir(directory):
            found.append(directory)
    return found


def v2_value(directory: str, name: str) -> Optional[float]:
    """A v2 limit file's value (memory.max, pids.max: the number; cpu.max: quota / period, in
    CPUs), None for `max` or a missing file."""
    try:
        with open(os.path.join(directory, name)) as f:
            words = f.read().split()
    except FileNotFoundError:
        return None
    if not words or words[0] == "max":
        return None
    if name == "cpu.max":
        return int(words[0]) / int(words[1])
    return int(words[0])


def limit_within(top: str, inner: str, name: str) -> Optional[float]:
    """The tightest value of a v2 limit file from the cgroup directory `inner` up to `top`, both
    included (`inner` is `top` or below it): the limit of a machine whose own cgroup is `top`,
    wherever in it the engine wrote the limit (the container's scope, a child the runtime made,
    the leaf of a delegated cgroup); None if none of them sets one."""
    assert inner == top or inner.startswith(top.rstrip("/") + "/"), (top, inner)
    found: List[float] = []
    directory = inner
    while True:
        value = v2_value(directory, name)
        if value is not None:
            found.append(value)
        if directory == top:
            return min(found) if found else None
        directory = os.path.dirname(directory)


# A dead rootless API service on a host without systemd --------------------------------------

SERVICE = ["podman", "system", "service", "--time=0"]


def answers(url: str) -> bool:
    """Does the Podman API at url answer /_ping?"""
    import docker

    api = None
    try:
        api = docker.APIClient(base_url=url, timeout=10)
        return bool(api.ping())
    except Exception:  # noqa: BLE001 (no answer, whatever the reason)
        return False
    finally:
        if api is not None:
            api.close()


def services_of(uid: int, url: str) -> List[int]:
    """The pids of the user's `podman system service` processes serving url."""
    found = []
    for pid in procs.pids_of_user(uid):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[:len(SERVICE)] == SERVICE and url in argv:
            found.append(pid)
    return found


def revive_rootless(user: str) -> Tuple[bool, str]:
    """(answers, what was done) for the user's Podman API service at its default socket.

    Where systemd is PID 1, the user's podman.socket starts the service on the next connection
    after a crash (the v2 guest). The CI host has no systemd as PID 1: scripts/ci/setup-podman.sh
    starts the service detached and nothing restarts it, so a crash of it (libsubid's, seen
    under concurrent creations) would fail every later rootless test. Here, as root, a service
    that has died (no process of it left) is started again the way setup-podman.sh starts it,
    and the note says so; a service that is alive but silent is left alone."""
    entry = pwd.getpwnam(user)
    url = rootless.socket_of(entry.pw_uid)
    if answers(url):
        return True, ""
    with open("/proc/1/comm") as f:
        if f.read().strip() == "systemd":
            return False, f"{url} does not answer (its podman.socket is systemd's)"
    if os.geteuid() != 0:
        return False, f"{url} does not answer (not root: cannot start {user}'s service)"
    alive = services_of(entry.pw_uid, url)
    if alive:
        return False, f"{url} does not answer; its service (pid {alive}) is alive: left alone"
    path = url[len("unix://"):]
    runtime = os.path.dirname(os.path.dirname(path))
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    with open(SERVICE_LOG.format(user=user), "ab") as log:
        service = subprocess.Popen(
            ["runuser", "-u", user, "--", "env", f"HOME={entry.pw_dir}",
             f"XDG_RUNTIME_DIR={runtime}", *SERVICE, url],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd="/", close_fds=True,
            start_new_session=True)
    if not wait_until(lambda: answers(url) or service.poll() is not None) or not answers(url):
        return False, f"{user}'s service, started again, does not answer at {url} " \
                      f"(log: {SERVICE_LOG.format(user=user)})"
    return True, f"{user}'s Podman API service had died: started again (pid {service.pid})"
