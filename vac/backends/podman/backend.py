# SPDX-License-Identifier: BSD-2-Clause
"""The Podman backend: machines of model `podman` as containers of a rootful Podman engine.

Podman serves a Docker-compatible REST API (`podman system service`, podman.socket); this
backend is the Docker backend (vac.backends.docker.backend) pointed at it, with what differs:

- the engine: settings.podman_url (default unix:///run/podman/podman.sock), and a probe that
  refuses an engine that is not Podman (a podman_url naming Docker's socket would mix the two
  backends' containers);
- the cgroup parent: the same per-machine parent as Docker's (/vac/docker-<machine dir> with
  the cgroupfs manager, the slice vac-docker-<dir>.slice with systemd; one release path for
  both), read and removed through PodmanCgroups (vac.backends.podman.conmon), because Podman
  puts each container's conmon in a child cgroup of that parent;
- images refreshed with docker_pull_seconds are reported in podman-images.json;
- errors name the podman backend; podman_parallel_creations creations at once.

Containers carry the same labels (vac.space, vac.factory, vac.machine, vac.machinetype,
vac.created), binds, limits and machinetype options (docker_*) as Docker's. The `docker`
package is imported lazily, as in the Docker backend.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator, List, Optional


from vac.backends.base import MachineSpec, MachineStatus, Probe
from vac.backends.docker.backend import DockerBackend, describe
from vac.backends.docker.images import ImageTracker
from vac.backends.docker.spec import NAME as DOCKER
from vac.backends.podman.conmon import PodmanCgroups
from vac.backends.podman.watch import PodmanWatcher
from vac.errors import BackendError
from vac.host.cgroups import Cgroups
from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)

NAME = "podman"
NAME_IN_USE = "is already in use"   # Podman's word for Docker's 409 Conflict on a name
STATE_IMPROPER = "container state improper"   # stopping on its own while force-removed
ENGINE = "Podman Engine"     # the component /version names when the engine is Podman


@contextlib.contextmanager
def renamed() -> Iterator[None]:
    """A BackendError the Docker code raised, re-raised as the podman backend's."""
    try:
        yield
    except BackendError as e:
        if e.backend != DOCKER:
            raise
        prefix = DOCKER + (f" {e.machine}" if e.machine else "") + ": "
        text = str(e)
        message = text[len(prefix):] if text.startswith(prefix) else text
        raise type(e)(NAME, message, e.machine) from (e.__cause__ or e)


def engine_of(version: Any) -> str:
    """'Podman 4.3.1' from a /version answer, '' if it names no Podman component."""
    for component in (version or {}).get("Components") or []:
        if isinstance(component, dict) and component.get("Name") == ENGINE:
            return f"Podman {component.get('Version', '?')}"
    return ""


class CompatClient:
    """The docker APIClient, with Podman's answers put as Docker's where they differ: a
    container name in use is a 500 from Podman 4.3 and a 409 from Docker (which the Docker
    code takes as: adopt or replace the container that has the name); a forced removal that
    meets the container stopping on its own ("container state improper") is a 500 from Podman
    4.3 where Docker removes it: asked once more, the stopped container goes."""

    def __init__(self, api: Any):
        self._api = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def create_container(self, *args: Any, **kwargs: Any) -> Any:
        import docker

        try:
            return self._api.create_container(*args, **kwargs)
        except docker.errors.APIError as e:
            if e.response is not None and e.status_code == 500 and \
                    NAME_IN_USE in str(e.explanation or ""):
                e.response.status_code = 409
            raise

    def remove_container(self, *args: Any, **kwargs: Any) -> Any:
        import docker

        try:
            return self._api.remove_container(*args, **kwargs)
        except docker.errors.APIError as e:
            if e.status_code != 500 or STATE_IMPROPER not in str(e.explanation or ""):
                raise
        return self._api.remove_container(*args, **kwargs)


class PodmanBackend(DockerBackend):
    """Containers of one rootful Podman engine (settings.podman_url) as Vac machines."""

    NAME = NAME
    MODELS = frozenset({"podman"})

    def __init__(self, settings: Any, cgroups: Optional[Cgroups] = None):
        super().__init__(settings, cgroups or PodmanCgroups())
        self.url = settings.podman_url
        self.images = ImageTracker(self._refresh_client,
                                   lambda: self.settings.paths.podman_images)

    def _client(self) -> Any:
        return CompatClient(super()._client())

    def _unreachable(self, e: BaseException) -> str:
        return f"Podman API not reachable at {self.url}: {describe(e)}"

    def probe(self) -> Probe:
        version = self._engine_version()
        if isinstance(version, Probe):
            return version
        engine = engine_of(version)
        api_version = version.get("ApiVersion", "?") if isinstance(version, dict) else "?"
        if not engine:
            return Probe(False, reason=f"the engine at {self.url} is not Podman (its /version "
                                       f"names no {ENGINE}): set podman_url to Podman's API "
                                       f"socket")
        return Probe(True, version=f"{engine} (compatible API {api_version})")

    def create(self, spec: MachineSpec) -> str:
        with renamed():
            container_id = super().create(spec)
        self._record_as_podman(spec.directory)
        return container_id

    def _record_as_podman(self, directory: MachineDir) -> None:
        """backend.json names this backend (the Docker code it ran wrote "docker")."""
        record = directory.read_backend_record()
        if record.get("backend") == NAME:
            return
        record.pop("version", None)
        record["backend"] = NAME
        try:
            directory.write_backend_record(record)
        except OSError as e:
            log.warning("%s: cannot update backend.json: %s", directory.name, e)

    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        with renamed():
            super().destroy(name, directory)

    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        with renamed():
            return super().status(name, directory)

    def list_machines(self) -> List[MachineStatus]:
        with renamed():
            return super().list_machines()

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        with renamed():
            return super().collect(name, directory)

    def watch(self, on_end) -> Optional[PodmanWatcher]:
        watcher = PodmanWatcher(self.url, self.settings.factory_name, on_end)
        watcher.start()
        return watcher

    def parallel_creations(self) -> int:
        return self.settings.podman_parallel_creations
