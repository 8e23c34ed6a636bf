# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the Podman backend: the Docker backend's image and network checks
asked at podman_url, and whether an OOM kill of a Podman machine can be told on this host."""
from __future__ import annotations

from typing import List, Optional

from vac.backends.checks import OK, WARN, Check
from vac.backends.docker.checks import DockerChecks
from vac.backends.podman import rootlesschecks
from vac.config.model import MachineType, Settings
from vac.host.cgroups import Cgroups

ENGINE_FIX = "start Podman's API (systemctl enable --now podman.socket) or set podman_url"


class PodmanChecks(DockerChecks):
    """Docker's checks through Podman's compatible API, then the OOM line."""

    ENGINE_FIX = ENGINE_FIX

    def __init__(self, name: str, settings: Settings):
        super().__init__(name, settings)
        self.HOST_CGROUPS = not getattr(settings, "podman_user", None)   # rootless: none

    def engine_fix(self, version: Optional[str]) -> str:
        user = getattr(self.settings, "podman_user", None)
        if user:
            return rootlesschecks.service_fix(user, None, self.settings.podman_url)
        return super().engine_fix(version)

    def lines(self, machinetypes: List[MachineType], usable: bool) -> List[Check]:
        return super().lines(machinetypes, usable) + [podman_oom()] + \
            rootlesschecks.lines(self.settings, usable)


def podman_oom(version: Optional[int] = None) -> Check:
    """Can OOM kills of Podman machines be told on this host? Not on cgroup v1: Podman's
    conmon reports none there, and the kernel counts them in the container's own memory
    cgroup, which Podman removes at the exit (on v2 the parent's memory.events keeps them)."""
    if version is None:
        version = Cgroups().hierarchies.version
    if version == 1:
        return Check("podman-oom", WARN, "cgroup v1: an OOM kill in a Podman machine is not "
                     "seen (no 700 shutdown_message; the machine just ends)",
                     "run Podman machines on a cgroup v2 host (EL9's default), or Docker ones")
    return Check("podman-oom", OK, "cgroup v2: OOM kills counted in each machine's parent")


CHECKS = PodmanChecks
