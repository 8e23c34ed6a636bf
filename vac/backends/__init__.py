# SPDX-License-Identifier: BSD-2-Clause
"""The backend registry: machine model -> backend class, imported only when asked for; each
backend's `vac doctor` checks (its wing's `checks` module, a BackendChecks subclass); and the
servers vacd runs beside its cycles for the backends' machines (host_services)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Dict, Optional, Sequence, Type

if TYPE_CHECKING:
    from vac.backends.base import HostServices
    from vac.backends.checks import BackendChecks
    from vac.config.model import Settings

from vac.config import models
from vac.errors import BackendUnavailable

# backend name -> (module, class, python package an admin would install)
BACKENDS = {
    "libvirt": ("vac.backends.libvirt.backend", "LibvirtBackend",
                "libvirt-python (python3-libvirt)"),
    "docker": ("vac.backends.docker.backend", "DockerBackend", "docker (python3-docker)"),
    "podman": ("vac.backends.podman.backend", "PodmanBackend", "docker (python3-docker)"),
    "apptainer": ("vac.backends.apptainer.backend", "ApptainerBackend", "spython"),
    "fake": ("vac.backends.fake", "FakeBackend", ""),
}

# backend name -> the module whose CHECKS class says what `vac doctor` asks of it beyond its
# probe (a backend not listed has nothing to add)
CHECKS = {name: f"vac.backends.{name}.checks" for name in ("libvirt", "docker", "podman",
                                                            "apptainer")}

# The supervisor of the servers vacd runs for machines whose backend's Capabilities say they
# need them (needs_metadata_server: the VMs' metadata service), as (module, class).
HOST_SERVICES = ("vac.backends.libvirt.services", "MetadataSupervisor")

MODEL_BACKENDS = models.backends()     # machine_model -> backend name (vac.config.models)

_loaded: Dict[str, Type] = {}


def backend_for_model(model: str) -> str:
    """The backend name serving a machine_model (the only place models are resolved)."""
    try:
        return MODEL_BACKENDS[model]
    except KeyError:
        raise BackendUnavailable(model, f"no backend serves machine_model {model!r}") from None


def get_backend_class(name: str) -> Type:
    """Import and return a backend class.

    Raises:
        BackendUnavailable: unknown name, or its Python library is not installed.
    """
    if name in _loaded:
        return _loaded[name]
    if name not in BACKENDS:
        raise BackendUnavailable(name, "unknown backend")
    module_name, class_name, package = BACKENDS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BackendUnavailable(name, f"cannot import {e.name or e}: install {package}") from e
    _loaded[name] = getattr(module, class_name)
    return _loaded[name]


def backend_checks(name: str, settings: Settings) -> BackendChecks:
    """What `vac doctor` asks of a backend beside its probe (images, networks, users, the ports
    of its host services). Importing a checks module never imports the backend's library."""
    if name not in CHECKS:
        from vac.backends.checks import BackendChecks

        return BackendChecks(name, settings)
    return importlib.import_module(CHECKS[name]).CHECKS(name, settings)


def host_services(addresses: Optional[Sequence[str]] = None,
                  port: Optional[int] = None) -> HostServices:
    """vacd's supervisor of the servers beside its cycles (base.HostServices): it starts them
    only when a configured backend's machines need them. addresses and port replace the
    defaults (tests of vacd serve on 127.0.0.1 and port 0)."""
    module, name = HOST_SERVICES
    cls = getattr(importlib.import_module(module), name)
    given = {"addresses": addresses, "port": port}
    return cls(**{k: v for k, v in given.items() if v is not None})
