# SPDX-License-Identifier: BSD-2-Clause
"""The rootful Podman the integration tests use (scripts/ci/setup-podman.sh): its API socket,
the local test image, a Docker-API client on that socket, and the directories of a cgroup
parent in every mounted hierarchy that has it."""
from __future__ import annotations

import os
from typing import List

from vac.backends.docker import cgroupparent
from vac.host.cgroups import Cgroups, host_path

IMAGE = "vac-test/busybox:1"
ENGINE = "unix:///run/podman/podman.sock"


def sdk():
    import docker
    return docker.APIClient(base_url=ENGINE, timeout=30)


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
