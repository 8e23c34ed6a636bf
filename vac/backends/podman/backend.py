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
  puts each container's conmon in a cgroup of its own under that parent (the child `conmon`,
  or with systemd the scope libpod-conmon-<id>.scope), whose CPU the machine is not charged
  for, and which is left (bounded) to finish before the parent goes;
- images refreshed with docker_pull_seconds are reported in podman-images.json;
- errors name the podman backend; podman_parallel_creations creations at once;
- its data root (admission by free disk space watches it) is its storage's graph root,
  labelled "podman storage";
- rootless (settings.podman_user): the user's own Podman at podman_url, containers in the
  user namespace `nomap` (root in the container is the user's first subordinate uid), no cgroup
  parent, limits only where that engine has the controllers, CPU seconds from /proc
  (vac.backends.podman.rootless).

Containers carry the same labels (vac.space, vac.factory, vac.machine, vac.machinetype,
vac.created), binds, limits and machinetype options (docker_*) as Docker's. The `docker`
package is imported lazily, as in the Docker backend.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Dict, Iterator, List, Optional

from vac import optional
from vac.backends.base import MachineSpec, MachineStatus, Probe
from vac.backends.docker.backend import DockerBackend, describe
from vac.backends.docker.images import ImageTracker
from vac.backends.docker.spec import NAME as DOCKER
from vac.backends.podman import rootless
from vac.backends.podman.conmon import PodmanCgroups
from vac.backends.podman.watch import PodmanWatcher
from vac.errors import BackendError
from vac.host.cgroups import Cgroups
from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)

NAME = "podman"
NAME_IN_USE = "is already in use"   # Podman's word for Docker's 409 Conflict on a name
STATE_IMPROPER = "container state improper"   # stopping on its own while force-removed
# A rootless Podman service reads the user's subordinate ranges through libsubid when it
# creates each container in a user namespace of its own; libsubid keeps its file state in
# globals, and two creations at once have crashed the service (SIGSEGV in
# subid_get_uid_ranges, seen here with Podman 4.3 and reported upstream as containers/storage
# issue 2030). So this process creates rootless containers one at a time; starts stay
# concurrent.
ROOTLESS_CREATE = threading.Lock()
ENGINE = "Podman Engine"     # the component /version names when the engine is Podman
PING_SECONDS = 5.0           # /_ping answers at once; /version asks the runtime and conmon


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
    4.3 where Docker removes it: asked once more, the stopped container goes. For a rootless
    engine each new container's host config is made rootless (rootless.prepare), and
    containers are created one at a time (ROOTLESS_CREATE)."""

    def __init__(self, api: Any, found: Optional[rootless.Rootless] = None):
        self._api = api
        self.rootless = found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._api, name)

    def create_container(self, *args: Any, **kwargs: Any) -> Any:
        import docker

        if self.rootless is not None and kwargs.get("host_config") is not None:
            kwargs["host_config"] = rootless.prepare(self.rootless, kwargs["host_config"],
                                                     str(kwargs.get("name") or ""))
        try:
            if self.rootless is None:
                return self._api.create_container(*args, **kwargs)
            with ROOTLESS_CREATE:
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
    """Containers of one Podman engine (settings.podman_url; rootless as settings.podman_user
    if set) as Vac machines."""

    NAME = NAME
    MODELS = frozenset({"podman"})
    DATA_ROOT_NAME = "storage"

    def __init__(self, settings: Any, cgroups: Optional[Cgroups] = None):
        super().__init__(settings, cgroups or PodmanCgroups())
        self.url = settings.podman_url
        self.images = ImageTracker(self._refresh_client,
                                   lambda: self.settings.paths.podman_images)
        self.user: Optional[str] = getattr(settings, "podman_user", None) or None
        self._rootless: Optional[rootless.Rootless] = None
        self._limits: Optional[Dict[str, Any]] = None
        self._version: Optional[Dict[str, Any]] = None
        self._cpu_seen: Dict[str, float] = {}     # rootless: container id -> most CPU seen

    def rootless(self) -> Optional[rootless.Rootless]:
        """The rootless user with its ranges (None: rootful), looked up once.

        Raises:
            BackendError: the user is missing, root, or has no subordinate range.
        """
        if self.user and self._rootless is None:
            self._rootless = rootless.resolve(self.user)
        return self._rootless

    def _client(self) -> Any:
        return CompatClient(super()._client(), self.rootless())

    def _cgroup_driver(self) -> str:
        """Rootless: no cgroup parent of Vac's (the user's Podman cannot make one)."""
        return "" if self.user else super()._cgroup_driver()

    def engine_limits(self) -> Dict[str, Any]:
        """Rootless: libpod's host facts (cgroupVersion, cgroupManager, cgroupControllers),
        asked once; their limits text is logged when a rootless engine cannot apply one."""
        if self._limits is None:
            self._limits = rootless.engine_info(self._client())
            if rootless.limits_applied(self._limits) != list(rootless.LIMITS):
                log.warning("rootless Podman of %s: %s", self.user,
                            rootless.limits_text(self._limits))
        return self._limits

    def data_root(self) -> Optional[str]:
        """The storage's graph root (the compatible /info's DockerRootDir), the user's own
        storage (~/.local/share/containers/storage by default) for a rootless Podman."""
        with renamed():
            return super().data_root()

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

    def _engine_version(self) -> Any:
        """The engine's /version reply, asked once with backend_timeout_seconds (Podman runs
        its runtime and conmon to answer it: seconds on a busy host), then kept while the
        engine answers /_ping; or a failed Probe saying why there is none."""
        if self._version is not None and self._pings():
            return self._version
        self._version = None
        missing = optional.backend_missing(NAME)
        if missing is not None:
            return Probe(False, reason=missing.text())
        import docker

        api = None
        try:
            api = docker.APIClient(base_url=self.url, timeout=self.timeout,
                                   version=docker.constants.MINIMUM_DOCKER_API_VERSION)
            version = api.version(api_version=False)
        except Exception as e:  # never raises: every failure is a reason
            return Probe(False, reason=self._unreachable(e))
        finally:
            if api is not None:
                api.close()
        if engine_of(version):
            self._version = version
        return version

    def _pings(self) -> bool:
        import docker

        api = None
        try:
            api = docker.APIClient(base_url=self.url, timeout=PING_SECONDS,
                                   version=docker.constants.MINIMUM_DOCKER_API_VERSION)
            return bool(api.ping())
        except Exception:  # noqa: BLE001 (no answer: ask /version again, which says why)
            return False
        finally:
            if api is not None:
                api.close()

    def create(self, spec: MachineSpec) -> str:
        found = self.rootless()
        with renamed():
            container_id = super().create(spec)
        self._record_as_podman(spec.directory, found)
        return container_id

    def _record_as_podman(self, directory: MachineDir,
                          found: Optional[rootless.Rootless] = None) -> None:
        """backend.json names this backend (the Docker code it ran wrote "docker"); for a
        rootless machine its user, the host uid of its root, and the limits applied."""
        record = directory.read_backend_record()
        if record.get("backend") == NAME and found is None:
            return
        record.pop("version", None)
        record["backend"] = NAME
        if found is not None:
            host = self.engine_limits()
            record.update({"rootless_user": found.user, "payload_uid": found.payload_uid,
                           "limits_applied": rootless.limits_applied(host),
                           "limits": rootless.limits_text(host)})
        try:
            directory.write_backend_record(record)
        except OSError as e:
            log.warning("%s: cannot update backend.json: %s", directory.name, e)

    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        """As Docker's; first, if the container has ended, conmon (with its exit command) is
        given time to leave the parent, so that a slice is not stopped with it inside."""
        parent = self.cgroup_path(name, directory)
        podman_cgroups = self.cgroups if isinstance(self.cgroups, PodmanCgroups) else None
        if parent and podman_cgroups is not None:
            podman_cgroups.let_conmon_leave(parent)
        with renamed():
            super().destroy(name, directory)
        if parent and podman_cgroups is not None:
            podman_cgroups.forget(parent)
        if directory is not None:
            self._cpu_seen.pop(str(directory.read_backend_record().get("container_id")), None)

    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        with renamed():
            return super().status(name, directory)

    def list_machines(self) -> List[MachineStatus]:
        with renamed():
            return super().list_machines()

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        with renamed():
            return super().collect(name, directory)

    def _cpu(self, attrs: Dict[str, Any], alive: bool,
             directory: Optional[MachineDir]) -> float:
        """Rootless: the container's processes as /proc counts them while it runs (there is no
        parent of Vac's; the cgroup of its pid is the user's service's, shared), else the most
        seen by this vacd or in the heartbeat."""
        if not self.user:
            return super()._cpu(attrs, alive, directory)
        ident = str(attrs.get("Id", ""))
        pid = int((attrs.get("State") or {}).get("Pid") or 0)
        cpu = rootless.tree_cpu_seconds(pid) if alive and pid > 0 else None
        seen = max(cpu or 0.0, self._cpu_seen.get(ident, 0.0),
                   directory.cpu_seconds if directory is not None else 0.0)
        if ident:
            self._cpu_seen[ident] = seen
        return seen

    def watch(self, on_end) -> Optional[PodmanWatcher]:
        watcher = PodmanWatcher(self.url, self.settings.factory_name, on_end)
        watcher.start()
        return watcher

    def parallel_creations(self) -> int:
        return self.settings.podman_parallel_creations
