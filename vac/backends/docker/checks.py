# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s checks of the Docker backend (and of Podman's Docker-compatible API): each
machinetype's image present in the engine or known to the registry, its docker_network there
with an address for every slot on macvlan/ipvlan, and whether the engine's storage driver
bounds the containers' writable layers (`<engine>-layer`: warn where it cannot, naming the
driver and why; vac.backends.docker.storage). Never raises: every failure is a line.
"""
from __future__ import annotations

from typing import List

from vac import optional
from vac.backends.checks import FAIL, OK, PROBE_TIMEOUT, WARN, BackendChecks, Check, one_line
from vac.backends.docker import storage
from vac.backends.docker.network import attachment
from vac.backends.docker.spec import image_of
from vac.config.model import MachineType, Settings
from vac.errors import VacError
from vac.machine.slots import make_slots

ENGINE_FIX = "start the engine (systemctl start docker) or set docker_url"
ENGINE_URLS = {"docker": "docker_url", "podman": "podman_url"}   # engines of the Docker API


class DockerChecks(BackendChecks):
    """Images and networks, asked of the engine at docker_url."""

    HOST_CGROUPS = True
    ENGINE_FIX = ENGINE_FIX

    def lines(self, machinetypes: List[MachineType], usable: bool) -> List[Check]:
        if not usable:
            return [Check(f"image {mt.name}", WARN, "not checked: the engine is not usable")
                    for mt in machinetypes]
        found = [docker_image(mt, self.settings, self.name, self.ENGINE_FIX)
                 for mt in machinetypes]
        rootless = self.name == "podman" and bool(getattr(self.settings, "podman_user", None))
        return found + [docker_network(mt, self.settings, self.name, self.ENGINE_FIX)
                        for mt in machinetypes if mt.docker_network] + \
            [writable_layer(self.settings, self.name, rootless, self.ENGINE_FIX)]


def _client(settings: Settings, engine: str):
    import docker

    return docker.APIClient(base_url=getattr(settings, ENGINE_URLS[engine]),
                            timeout=PROBE_TIMEOUT)


def docker_image(mt: MachineType, settings: Settings, engine: str = "docker",
                 engine_fix: str = ENGINE_FIX) -> Check:
    """The image is in the engine (Docker, or Podman's compatible API) already, else the
    registry knows it (no pull)."""
    name = f"image {mt.name}"
    try:
        ref = image_of(mt.root_image)
    except VacError as e:
        return Check(name, FAIL, str(e), f"root_image = docker://<image> in [machinetype "
                     f"{mt.name}]")
    try:
        import docker
    except ImportError:
        missing = optional.MissingLibrary.of(f"machine_model = {engine} (machinetype "
                                             f"{mt.name})", "docker")
        return Check(name, FAIL, missing.text(), missing.package)
    api = None
    try:
        api = _client(settings, engine)
        try:
            api.inspect_image(ref)
            return Check(name, OK, f"{ref} present in the engine")
        except docker.errors.ImageNotFound:
            pass
        try:
            api.inspect_distribution(ref)
        except Exception as e:  # noqa: BLE001 (registry errors of every kind are the answer)
            return Check(name, FAIL, f"{ref} is not in the engine and cannot be pulled: "
                         f"{one_line(e)}", f"{engine} pull {ref}, or correct root_image")
        return Check(name, WARN, f"{ref} not in the engine; the registry has it (pulled at the "
                     "first creation)", f"{engine} pull {ref} to save the first creation's wait")
    except Exception as e:  # noqa: BLE001 (the engine check says why the engine is down)
        return Check(name, FAIL, f"cannot ask the engine about {ref}: {one_line(e)}",
                     engine_fix)
    finally:
        if api is not None:
            api.close()


def docker_network(mt: MachineType, settings: Settings, engine: str = "docker",
                   engine_fix: str = ENGINE_FIX) -> Check:
    """The machinetype's docker_network exists; on macvlan/ipvlan, every slot has an address."""
    name = f"network {mt.name}"
    api = None
    try:
        import docker

        api = _client(settings, engine)
        try:
            attrs = api.inspect_network(mt.docker_network)
        except docker.errors.NotFound:
            return Check(name, FAIL, f"docker_network {mt.docker_network} does not exist",
                         f"docker network create ... {mt.docker_network}, or correct "
                         "docker_network")
        slots = make_slots(settings.factory_name, settings.host_processors)
        try:
            last = attachment(attrs, slots[-1], mt.name, mt.docker_network) if slots else None
        except VacError as e:
            return Check(name, FAIL, str(e), "give the network an IPv4 subnet and a range "
                                             "with an address for every slot")
        where = f" (slot {slots[-1].ordinal}: {last.ip})" if last and last.ip else ""
        return Check(name, OK, f"{mt.docker_network}: {attrs.get('Driver')}{where}")
    except Exception as e:  # noqa: BLE001 (the engine check says why the engine is down)
        return Check(name, FAIL, f"cannot ask the engine about network {mt.docker_network}: "
                     f"{one_line(e)}", engine_fix)
    finally:
        if api is not None:
            api.close()


def writable_layer(settings: Settings, engine: str = "docker", rootless: bool = False,
                   engine_fix: str = ENGINE_FIX) -> Check:
    """Does the engine bound the containers' writable layers (to their scratch size)? Warn
    where its storage driver takes no size: they are watched only through the free space of
    its data root."""
    name = f"{engine}-layer"
    api = None
    try:
        api = _client(settings, engine)
        info = api.info()
    except Exception as e:  # noqa: BLE001 (the engine check says why the engine is down)
        return Check(name, WARN, f"cannot ask the engine's storage driver: {one_line(e)}",
                     engine_fix)
    finally:
        if api is not None:
            api.close()
    info = info if isinstance(info, dict) else {}
    found = storage.layer(info, storage.read_mountinfo(), rootless)
    if found.bounded:
        return Check(name, OK, f"containers' writable layers bounded to their scratch size "
                               f"(disk_gb_per_processor): {found.why}")
    keep = "keep disk_floor_gb above what a payload may write outside /scratch"
    return Check(name, WARN, f"containers' writable layers not bounded: {found.why}; they are "
                             f"watched only through the free space of the data root "
                             f"{storage.data_root(info) or '(not named)'}",
                 keep if rootless else "to bound them, put the engine's data root on xfs "
                 f"mounted with pquota (overlay2) and set disk_gb_per_processor; else {keep}")


CHECKS = DockerChecks
