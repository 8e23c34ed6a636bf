# SPDX-License-Identifier: BSD-2-Clause
"""A container that already has a new machine's name (the engine answered 409 to its
creation): this machine's own, adopted (started if it was only created: an idempotent
create); one Vac 03 or an earlier machine of this factory left, removed; another's, refused.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from vac.backends.base import MachineSpec
from vac.backends.docker import cgroupparent, vac03
from vac.backends.docker.engine import owned
from vac.backends.docker.engine import sdk as _sdk
from vac.backends.docker.spec import NAME
from vac.errors import BackendError
from vac.host.cgroups import Cgroups

log = logging.getLogger(__name__)


def adopt_existing(api: Any, spec: MachineSpec, cgroups: Cgroups) -> Optional[str]:
    """Id of this machine's container if it already exists (then started if it was only
    created); None after removing a stale container of ours that has the name.

    Raises:
        BackendError: the container with the name is not this factory's.
    """
    docker = _sdk()
    try:
        attrs = api.inspect_container(spec.name)
    except docker.errors.NotFound:
        return None
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    if vac03.earlier_leftover(attrs, spec.name, spec.directory, spec.settings.paths):
        log.warning("%s: removing container %s that Vac 03 left for its finished machine",
                    spec.name, attrs["Id"][:12])
        api.remove_container(attrs["Id"], force=True, v=True)
        return None
    if not owned(labels, spec.settings.vac_space, spec.settings.factory_name):
        raise BackendError(NAME, f"a container named {spec.name} exists that is not this "
                                 f"factory's (no vac.factory/vac.space labels); remove it",
                           spec.name)
    if labels.get("vac.created") == str(spec.created) and \
            labels.get("vac.machinetype") == spec.machinetype.name:
        if attrs["State"]["Status"] == "created":
            api.start(attrs["Id"])
        log.info("%s: adopting existing container %s", spec.name, attrs["Id"][:12])
        return str(attrs["Id"])
    log.warning("%s: removing stale container %s of an earlier machine (created %s)",
                spec.name, attrs["Id"][:12], labels.get("vac.created"))
    api.remove_container(attrs["Id"], force=True, v=True)
    cgroupparent.remove(cgroupparent.of_container(attrs), cgroups)
    return None
