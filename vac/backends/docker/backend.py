# SPDX-License-Identifier: BSD-2-Clause
"""The Docker backend: machines of model `docker` as containers of a Docker engine (docker SDK).

Containers are ours when they carry the labels vac.space and vac.factory of this factory (plus
vac.machine, vac.machinetype, vac.created naming the machine). The machine sees MJF at
/etc/machinefeatures and /etc/jobfeatures (read-only binds of the machine directory) and writes
to /var/spool/joboutputs; /user_data is its command. Each container gets a cgroup parent of its
own in the form the engine's cgroup driver wants (/vac/docker-<machine dir> with cgroupfs, the
slice vac-docker-<machine dir>.slice with systemd: vac.backends.docker.cgroupparent), which
keeps the container's CPU seconds after the container has ended (the original read cpuacct.usage
of the live container only). What the engine is asked for (labels, mounts, limits) is built by
vac.backends.docker.spec. A container's writable layer is bounded to its scratch size where
the engine's storage driver takes a size (vac.backends.docker.storage).

The `docker` package is imported lazily (vac.backends.docker.engine): importing this module
never needs it, and probe() says what to install. Every docker/requests exception becomes
BackendError, or BackendUnavailable when the engine cannot be reached.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, List, Optional, Tuple

from vac import optional
from vac.backends import scratchmount
from vac.backends.base import Backend, Capabilities, MachineSpec, MachineStatus, Probe
from vac.backends.docker import cgroupparent, console, delegation, network, storage, vac03
from vac.backends.docker.engine import boundary, describe, owned, state_of
from vac.backends.docker.engine import sdk as _sdk
from vac.backends.docker.existing import adopt_existing
from vac.backends.docker.images import ImageTracker, Resolved, inspect, pull
from vac.backends.docker.spec import (
    CVMFS,
    JOBFEATURES,
    JOBOUTPUTS,
    MACHINEFEATURES,
    NAME,
    container_args,
    host_config_args,
    image_of,
    prepare_mounts,
    with_scratch,
)
from vac.backends.docker.watch import DockerWatcher
from vac.errors import BackendError, BackendUnavailable
from vac.faults import crash_point
from vac.host.cgroups import Cgroups
from vac.machine import scratch
from vac.machine.directory import MachineDir, MachineState
from vac.machine.outcome import oom_message

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 5.0
# Crash points (vac.faults) of the tests: the engine made the parent, nothing names it yet;
# the container is removed, its parent not yet.
CRASH_BEFORE_RECORD = "docker:after-container"
CRASH_BEFORE_PARENT_REMOVAL = "docker:after-remove"
# The backend ---------------------------------------------------------------------------------

class DockerBackend(Backend):
    """Containers of one Docker engine (settings.docker_url) as Vac machines."""

    NAME = NAME
    MODELS = frozenset({"docker"})
    CAPABILITIES = Capabilities(machinefeatures_url=MACHINEFEATURES,
                                jobfeatures_url=JOBFEATURES, joboutputs_url=JOBOUTPUTS)
    user: Optional[str] = None    # a rootless engine's user (Podman's podman_user)

    def __init__(self, settings: Any, cgroups: Optional[Cgroups] = None):
        super().__init__(settings)
        self.url = settings.docker_url
        self.timeout = float(settings.backend_timeout_seconds)
        self.cgroups = cgroups or Cgroups()
        self.cvmfs_root = CVMFS
        self._api: Any = None
        self._driver: Optional[str] = None
        self._engine_info: Optional[Dict[str, Any]] = None
        self._layer: Optional[storage.Layer] = None
        self.images = ImageTracker(self._refresh_client,
                                   lambda: self.settings.paths.docker_images)

    # Engine access ---------------------------------------------------------------------------

    def _unreachable(self, e: BaseException) -> str:
        return f"Docker engine not reachable at {self.url}: {describe(e)}"

    def _boundary(self, what: str, machine: Optional[str] = None) -> Any:
        """Turn docker/requests/OS exceptions into BackendError/BackendUnavailable."""
        return boundary(what, machine, self._unreachable)

    def _client(self) -> Any:
        """The low-level API client (timeout on every call), connected on first use."""
        if self._api is None:
            docker = _sdk()
            try:
                self._api = docker.APIClient(
                    base_url=self.url, timeout=self.timeout, version="auto",
                    max_pool_size=max(10, self.settings.docker_parallel_creations + 2))
            except (docker.errors.DockerException, OSError) as e:
                raise BackendUnavailable(NAME, self._unreachable(e)) from e
        return self._api

    def _refresh_client(self) -> Any:
        """A client of its own for the image tracker's thread (its pulls never hold the
        creations' connections)."""
        return _sdk().APIClient(base_url=self.url, timeout=self.timeout, version="auto")

    def _info(self) -> Dict[str, Any]:
        """The engine's /info, asked once (until it answers)."""
        if self._engine_info is None:
            with self._boundary("info"):
                info = self._client().info()
            self._engine_info = dict(info) if isinstance(info, dict) else {}
        return self._engine_info

    def _cgroup_driver(self) -> str:
        """The engine's cgroup driver (cgroupfs, systemd), asked once."""
        if self._driver is None:
            self._driver = str(self._info().get("CgroupDriver", ""))
        return self._driver

    def data_root(self) -> Optional[str]:
        return storage.data_root(self._info())

    def probe(self) -> Probe:
        version = self._engine_version()
        if isinstance(version, Probe):
            return version
        return Probe(True, version=f"{version.get('Version', '?')} "
                                   f"(API {version.get('ApiVersion', '?')})")

    def _engine_version(self) -> Any:
        """The engine's /version reply, or a failed Probe saying why there is none."""
        missing = optional.backend_missing(NAME)
        if missing is not None:
            return Probe(False, reason=missing.text())
        docker = _sdk()
        api = None
        try:
            api = docker.APIClient(base_url=self.url, timeout=min(PROBE_TIMEOUT, self.timeout),
                                   version=docker.constants.MINIMUM_DOCKER_API_VERSION)
            return api.version(api_version=False)
        except Exception as e:  # never raises: every failure is a reason
            return Probe(False, reason=self._unreachable(e))
        finally:
            if api is not None:
                api.close()

    # Creation ----------------------------------------------------------------------------------

    def create(self, spec: MachineSpec) -> str:
        image = image_of(spec.machinetype.root_image)
        try:
            mounts = prepare_mounts(spec, self.cvmfs_root)
        except OSError as e:
            raise BackendError(NAME, f"preparing {spec.directory.path}: {e}", spec.name) from e
        mounts = with_scratch(mounts, scratchmount.make(spec, NAME), scratchmount.CONTAINER_PATH)
        parent = cgroupparent.for_machine(spec.directory, self._cgroup_driver())
        api = self._client()
        with self._boundary("create", spec.name):
            resolved = self._resolve(api, image, spec)
            place = self._attachment(api, spec)
            container_id, fresh, resolved = self._create_container(
                api, resolved, spec, mounts, parent,
                network.create_args(api, place) if place else {})
            if fresh:
                self._start(api, container_id, spec.name, parent)
                delegation.delegate(api, container_id, spec.name, self.cgroups,
                                    spec.machinetype.cgroup_delegate)
        crash_point(CRASH_BEFORE_RECORD)   # the engine made the parent; nothing names it yet
        try:
            spec.directory.write_backend_record({
                "backend": NAME, "container_id": container_id, "image": image,
                "image_id": resolved.image_id, "image_version": resolved.version,
                "cgroup_driver": self._driver or "", "cgroup_parent": parent or "",
                "memory_mb": spec.memory_mb, "processors": spec.processors,
                **network.record(place)})
        except OSError as e:
            self.destroy(spec.name, None)
            raise BackendError(NAME, f"cannot record the container: {e}", spec.name) from e
        log.info("%s: container %s started from %s (%s)", spec.name, container_id[:12], image,
                 resolved.version)
        return container_id

    def _resolve(self, api: Any, image: str, spec: MachineSpec) -> Resolved:
        """The image a new container starts from: with docker_pull_seconds the tracker's
        last good resolution (no engine call); else, or the first time, the local engine's,
        pulling only an image the engine lacks."""
        interval = spec.machinetype.docker_pull_seconds
        if interval is None:
            self.images.drop(spec.machinetype.name, image)
        else:
            known = self.images.current(image)
            if known is not None:
                return known
        docker = _sdk()
        pulled = False
        try:
            resolved = inspect(api, image)
        except docker.errors.ImageNotFound:
            self._pull(api, image, spec)
            pulled = True
            try:
                resolved = inspect(api, image)
            except docker.errors.ImageNotFound as e:
                raise BackendError(NAME, f"image {image} not found after pull: "
                                         f"{describe(e)}", spec.name) from e
        if interval is not None:
            self.images.remember(spec.machinetype.name, image, interval,
                                 spec.machinetype.docker_pull_timeout_seconds, resolved, pulled)
        return resolved

    def _create_container(self, api: Any, resolved: Resolved, spec: MachineSpec,
                          mounts: List[Dict[str, Any]], parent: Optional[str],
                          networking: Dict[str, Any]) -> Tuple[str, bool, Resolved]:
        """(container id, True if new, the image it has). Creates from the resolved image id,
        so the tag moving meanwhile cannot change it; an id the engine lost (removed by
        hand) is resolved anew once. Adopts or replaces a container that already has the
        name (idempotent create)."""
        docker = _sdk()
        lost = False
        for _ in range(3):
            host_config = api.create_host_config(**host_config_args(spec, mounts, parent),
                                                 **storage.size_option(self._layer_size(spec)))
            try:
                made = api.create_container(resolved.image_id, host_config=host_config,
                                            **container_args(spec), **networking)
                return made["Id"], True, resolved
            except docker.errors.ImageNotFound as e:
                if lost:
                    raise BackendError(NAME, f"image {resolved.image} "
                                             f"({resolved.image_id}) not found: "
                                             f"{describe(e)}", spec.name) from e
                log.warning("%s: image %s (%s) is gone from the engine; resolving it anew",
                            spec.name, resolved.image, resolved.image_id)
                self.images.forget(resolved.image)
                resolved = self._resolve(api, resolved.image, spec)
                lost = True
            except docker.errors.APIError as e:
                if e.status_code != 409:
                    raise
                existing = adopt_existing(api, spec, self.cgroups)
                if existing:
                    return existing, False, resolved
        raise BackendError(NAME, f"container name {spec.name} stays in use", spec.name)

    def _layer_size(self, spec: MachineSpec) -> Optional[int]:
        """The bound of a new container's writable layer: its scratch size, where the storage
        driver takes a size (decided once per engine: vac.backends.docker.storage)."""
        if self._layer is None:
            self._layer = storage.layer(self._info(), storage.read_mountinfo(), bool(self.user))
            log.info("%s: containers' writable layers %s: %s", self.NAME, "bounded"
                     if self._layer.bounded else "not bounded", self._layer.why)
        mt = spec.machinetype
        return scratch.limit_bytes(mt.disk_gb_per_processor, spec.settings.disk_gb_per_processor,
                                   spec.processors) if self._layer.bounded else None

    def _attachment(self, api: Any, spec: MachineSpec) -> Optional[network.Attachment]:
        """Where the machinetype's docker_network puts this slot's container (on a macvlan
        or ipvlan network the slot's own IP, and MAC); None without docker_network.

        Raises:
            BackendError: the network does not exist or has no address for the slot.
        """
        mt = spec.machinetype
        if not mt.docker_network:
            return None
        try:
            attrs = api.inspect_network(mt.docker_network)
        except _sdk().errors.NotFound:
            raise network.missing(mt, spec.slot) from None
        return network.attachment(attrs, spec.slot, mt.name, mt.docker_network)

    def _pull(self, api: Any, image: str, spec: MachineSpec) -> None:
        """Pull an image within docker_pull_timeout_seconds.

        Raises:
            BackendError: the pull failed or timed out (the factory backs off the machinetype).
        """
        log.info("%s: pulling image %s", spec.name, image)
        with self._boundary(f"cannot pull image {image}", spec.name):
            pull(api, image, spec.machinetype.docker_pull_timeout_seconds, spec.name)

    def _start(self, api: Any, container_id: str, name: str, parent: Optional[str]) -> None:
        """Start a new container; on failure remove it so nothing is left behind."""
        docker = _sdk()
        try:
            api.start(container_id)
        except docker.errors.APIError as e:
            with contextlib.suppress(docker.errors.APIError):
                api.remove_container(container_id, force=True, v=True)
            cgroupparent.remove(parent, self.cgroups)
            raise BackendError(NAME, f"cannot start container: {describe(e)}", name) from e

    # Observation -------------------------------------------------------------------------------

    def _inspect(self, name: str, directory: Optional[MachineDir]) -> Optional[Dict[str, Any]]:
        """The engine's record of this machine's container, or None if it has none."""
        docker = _sdk()
        record = directory.read_backend_record() if directory is not None else {}
        ident = str(record.get("container_id") or name)
        api = self._client()
        with self._boundary("inspect", name):
            try:
                attrs = api.inspect_container(ident)
            except docker.errors.NotFound:
                return None
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if not owned(labels, self.settings.vac_space, self.settings.factory_name):
            return self._adopted(attrs, directory, record)
        if labels.get("vac.machine") != name:
            return None
        if directory is not None and labels.get("vac.created") != str(directory.created):
            return None
        return attrs

    def _adopted(self, attrs: Dict[str, Any], directory: Optional[MachineDir],
                 record: Dict[str, Any]) -> Optional[Dict[str, Any]]:
        """attrs if the container is one Vac 03 started for this machine directory (adopted
        now, recorded in backend.json, if the directory is unfinished and has no record yet);
        None if it is not ours."""
        if directory is None or not vac03.started_by_vac03(attrs, directory):
            return None
        if record.get("adopted") == vac03.ADOPTED:
            return attrs if record.get("container_id") == attrs.get("Id") else None
        if record or directory.exists("finished"):
            return None
        try:
            directory.write_backend_record(vac03.adoption_record(attrs, directory))
        except OSError as e:
            raise BackendError(NAME, f"cannot record the adoption: {e}", directory.name) from e
        log.info("%s: adopted container %s that Vac 03 started", directory.name,
                 str(attrs.get("Id", ""))[:12])
        return attrs

    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        return self._status(name, directory, self._inspect(name, directory))

    def _status(self, name: str, directory: Optional[MachineDir],
                attrs: Optional[Dict[str, Any]]) -> MachineStatus:
        record = directory.read_backend_record() if directory is not None else {}
        if attrs is None:
            parent = str(record.get("cgroup_parent") or "")
            cpu = cgroupparent.cpu_seconds(parent, self.cgroups)
            if cpu is None:
                cpu = directory.cpu_seconds if directory is not None else 0.0
            return MachineStatus(name=name, state=MachineState.SHUTDOWN, cpu_seconds=cpu,
                                 backend_id=str(record.get("container_id") or ""))
        state = attrs.get("State") or {}
        machine_state = state_of(str(state.get("Status", "")))
        alive = machine_state in (MachineState.RUNNING, MachineState.PAUSED)
        return MachineStatus(
            name=name, state=machine_state, backend_id=str(attrs.get("Id", "")),
            cpu_seconds=self._cpu(attrs, alive, directory),
            exit_code=None if alive else state.get("ExitCode"),
            oom_killed=bool(state.get("OOMKilled")) or self._parent_oom(attrs),
            labels=dict((attrs.get("Config") or {}).get("Labels") or {}),
            extra={"status": str(state.get("Status", "")),
                   "image": str((attrs.get("Config") or {}).get("Image", "")),
                   "started_at": str(state.get("StartedAt", "")),
                   "finished_at": str(state.get("FinishedAt", ""))})

    def _parent_oom(self, attrs: Dict[str, Any]) -> bool:
        """Did the OOM killer strike under the container's parent? (The engine's OOMKilled
        may come after the container's exit with cgroup v2.)"""
        return cgroupparent.oom_kills(cgroupparent.of_container(attrs), self.cgroups) > 0

    def _cpu(self, attrs: Dict[str, Any], alive: bool,
             directory: Optional[MachineDir]) -> float:
        """CPU seconds: our cgroup parent (survives the container), else the live container's
        cgroup, else the stats API, else the last heartbeat's value."""
        cpu = cgroupparent.cpu_seconds(cgroupparent.of_container(attrs), self.cgroups)
        if cpu is None and alive:
            cpu = delegation.cpu_seconds(int((attrs.get("State") or {}).get("Pid") or 0),
                                         self.cgroups)
        if cpu is None and alive:
            cpu = self._stats_cpu(str(attrs.get("Id", "")))
        if cpu is None:
            cpu = directory.cpu_seconds if directory is not None else 0.0
        return cpu

    def _stats_cpu(self, container_id: str) -> Optional[float]:
        with self._boundary("stats", container_id[:12]):
            stats = self._client().stats(container_id, stream=False, one_shot=True)
        usage = ((stats or {}).get("cpu_stats") or {}).get("cpu_usage") or {}
        total = usage.get("total_usage")
        return total / 1e9 if isinstance(total, (int, float)) and total > 0 else None

    def list_machines(self) -> List[MachineStatus]:
        filters = {"label": [f"vac.factory={self.settings.factory_name}",
                             f"vac.space={self.settings.vac_space}"]}
        api = self._client()
        with self._boundary("list"):
            found = api.containers(all=True, filters=filters)
        machines = []
        for c in found:
            labels = c.get("Labels") or {}
            if not owned(labels, self.settings.vac_space, self.settings.factory_name):
                continue
            names = [n.lstrip("/") for n in c.get("Names") or []]
            machines.append(MachineStatus(
                name=labels.get("vac.machine") or (names[0] if names else ""),
                state=state_of(str(c.get("State", ""))), backend_id=str(c.get("Id", "")),
                labels=dict(labels),
                extra={"status": str(c.get("Status", "")), "image": str(c.get("Image", "")),
                       "container_name": names[0] if names else ""}))
        return machines

    # Finishing ---------------------------------------------------------------------------------

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        attrs = self._inspect(name, directory)
        final = self._status(name, directory, attrs)
        if attrs is not None:
            try:
                self._save_console(str(attrs["Id"]), directory)
            except BackendError as e:
                log.warning("%s: console log not saved: %s", name, e)
        self._remember_cpu(directory, final.cpu_seconds)
        if final.oom_killed:
            mb = directory.read_backend_record().get("memory_mb", "?")
            if directory.write_shutdown_message_if_none(oom_message(mb)):
                log.info("%s: killed by the OOM killer; shutdown_message written", name)
        return final

    def _remember_cpu(self, directory: MachineDir, cpu_seconds: float) -> None:
        """Keep the final CPU seconds unrounded in backend.json (the heartbeat file holds
        whole seconds, as the original wrote and parses it)."""
        record = directory.read_backend_record()
        if not record or cpu_seconds <= 0:
            return
        record.pop("version", None)
        record["cpu_seconds"] = round(cpu_seconds, 3)
        try:
            directory.write_backend_record(record)
        except OSError as e:
            log.warning("%s: cannot update backend.json: %s", directory.name, e)

    def _save_console(self, container_id: str, directory: MachineDir) -> None:
        with self._boundary("logs", directory.name):
            console.save(self._client(), container_id, directory, self.timeout)

    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        docker = _sdk()
        attrs = self._inspect(name, directory)
        record = directory.read_backend_record() if directory is not None else {}
        parent = str(record.get("cgroup_parent") or "")
        if attrs is not None:
            parent = cgroupparent.of_container(attrs) or parent
            with self._boundary("remove", name):
                try:
                    self._client().remove_container(attrs["Id"], force=True, v=True)
                    log.info("%s: container %s removed", name, str(attrs["Id"])[:12])
                except docker.errors.NotFound:
                    pass
                except docker.errors.APIError as e:
                    if e.status_code != 409:  # 409: removal already in progress
                        raise
        crash_point(CRASH_BEFORE_PARENT_REMOVAL)
        cgroupparent.remove(parent, self.cgroups)
        scratchmount.remove(self.settings, directory, NAME)

    def watch(self, on_end) -> Optional[DockerWatcher]:
        watcher = DockerWatcher(self.url, self.settings.factory_name, on_end)
        watcher.start()
        return watcher

    def parallel_creations(self) -> int:
        return self.settings.docker_parallel_creations

    def cgroup_path(self, name: str, directory: Optional[MachineDir]) -> Optional[str]:
        record = directory.read_backend_record() if directory is not None else {}
        return cgroupparent.cgroup_path(str(record.get("cgroup_parent") or ""))

    def release(self, directory: MachineDir) -> bool:
        return cgroupparent.release(directory, self.cgroups) | \
            scratchmount.release(self.settings, directory)

    def release_leftovers(self, machines_dir: str, factory_name: str) -> List[str]:
        return cgroupparent.release_leftovers(machines_dir, factory_name, self.cgroups) + \
            scratchmount.release_leftovers(self.settings, factory_name)
