# SPDX-License-Identifier: BSD-2-Clause
"""What the Apptainer integration tests share: the user and image, the gate, cgroup teardown.

Each test runs its machines under a cgroup parent of its own (vac-test-<random>); teardown kills
and removes every cgroup under it, then the parent itself.
"""
from __future__ import annotations

import os
import pwd
from typing import Iterable

from testbed import require_engine

from vac.host import cgroupmachine

SANDBOX = "/var/lib/vac-test/busybox-sandbox"
USER = "vacsngly"


def user_uid() -> int:
    return pwd.getpwnam(USER).pw_uid


def require_root() -> None:
    require_engine("apptainer", os.geteuid() == 0, "the Apptainer tests run as root")


def require_usable(backend) -> None:
    """The backend's probe succeeds and the sandbox image is there (else skip, or fail in CI)."""
    probe = backend.probe()
    require_engine("apptainer", probe.available and os.path.isdir(SANDBOX),
                   probe.reason or f"no sandbox image {SANDBOX}: run scripts/ci/setup-apptainer.sh")


def remove_cgroups(hierarchy, parent: str, backends: Iterable = ()) -> None:
    """Kill and remove every cgroup under parent, reap the children of the given backends,
    then remove parent from every hierarchy."""
    for child in cgroupmachine.list_children(hierarchy, ("",), parent):
        cg = cgroupmachine.MachineCgroup(hierarchy, child, parent)
        cg.kill()
        cg.remove()
    for backend in backends:
        for proc in backend._children.values():
            proc.wait(timeout=5)
    for root in set(hierarchy.mounts.values()):
        try:
            os.rmdir(os.path.join(root, parent))
        except FileNotFoundError:
            pass
