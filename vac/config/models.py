# SPDX-License-Identifier: BSD-2-Clause
"""Machine models: every machine_model a machinetype may name, the backend that serves it and
what kind of machine it makes. The one table of them: the configuration's checks, the backend
registry (vac.backends.backend_for_model), the libvirt backend and `vac machines` read it.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

VM = "VM"                 # a libvirt virtual machine
DOCKER_CONTAINER = "DC"   # a container of a Docker-API engine (Docker, Podman)
APPTAINER_CONTAINER = "SC"  # an Apptainer (formerly Singularity) container
TEST = "test"             # the fake backend's machines, for tests

# machine_model -> (backend, kind), in the order the man page and errors list them
MODELS: Dict[str, Tuple[str, str]] = {
    "cernvm3": ("libvirt", VM), "cernvm4": ("libvirt", VM), "vm-raw": ("libvirt", VM),
    "docker": ("docker", DOCKER_CONTAINER), "podman": ("podman", DOCKER_CONTAINER),
    "singularity": ("apptainer", APPTAINER_CONTAINER),
    "apptainer": ("apptainer", APPTAINER_CONTAINER),
    "fake": ("fake", TEST),
}


def names() -> Tuple[str, ...]:
    return tuple(MODELS)


def of_kind(*kinds: str) -> Tuple[str, ...]:
    """The models that make machines of these kinds."""
    return tuple(m for m, (_, kind) in MODELS.items() if kind in kinds)


def kind(model: str) -> Optional[str]:
    """VM, DC or SC (test for the fake backend); None for a model no backend serves."""
    entry = MODELS.get(model)
    return entry[1] if entry else None


def backends() -> Dict[str, str]:
    """machine_model -> the name of the backend that serves it."""
    return {m: backend for m, (backend, _) in MODELS.items()}


VM_MODELS = of_kind(VM)
CONTAINER_MODELS = of_kind(DOCKER_CONTAINER, APPTAINER_CONTAINER)
