# SPDX-License-Identifier: BSD-2-Clause
"""Options of the original that are accepted but do nothing here, said out loud by
`vac config check` ("accepted but not supported: <reason>") instead of silently ignored.

Only options a file or pipe actually set are reported, each with where it was set.
cgroup_delegate depends on the host too: on a cgroup v1 (or hybrid) host it is accepted but
does nothing (there is no safe delegation of a v1 hierarchy); a VM machinetype needs none.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

from vac.config import models
from vac.config.model import Config
from vac.errors import Problem
from vac.host import cgroups

VM_MODELS = models.VM_MODELS
CONTAINER_MODELS = models.CONTAINER_MODELS

# (option, value that does nothing or None for any value, reason)
SETTINGS_NOTES = (
    ("description", None, "free text that nothing reads (the original did not read it either)"),
    ("fix_networking", False, "the NAT network vac_169.254.0.0 is always checked and repaired "
                              "before VMs are created; only vac doctor looks at this option"),
)
# (option, the models it has an effect for, reason)
MACHINETYPE_NOTES = (
    ("root_device", VM_MODELS, "only VMs have a root disk device"),
    ("scratch_device", VM_MODELS, "only VMs have a scratch disk device"),
    ("image_signing_dn", ("cernvm3", "cernvm4"), "only CernVM ISO images carry a signature"),
    ("container_command", CONTAINER_MODELS, "only containers run a command"),
    ("cvmfs_repositories", CONTAINER_MODELS,
     "only containers get /cvmfs bound in; VMs mount CernVM-FS themselves"),
    ("tmp_binds", ("docker", "podman"), "only Docker and Podman containers get tmp_binds"),
    ("cgroup_delegate", CONTAINER_MODELS,
     "VMs need no delegated cgroup: the guest has its own kernel and cgroups"),
)
# (option, reason) of machinetype options that do nothing on a cgroup v1 host
V1_MACHINETYPE_NOTES = (
    ("cgroup_delegate", "this host has cgroup v1 (or hybrid) hierarchies, whose cgroups cannot "
                        "be delegated safely: machines get a cgroup they cannot write, as "
                        "before"),
)


def _set_by(origins: Mapping[str, str], name: str) -> str:
    origin = origins.get(name, "default")
    return "" if origin in ("default", "") or origin.startswith("default") else origin


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return " ".join(value) if isinstance(value, tuple) else str(value)


def _located(config: Config, origin: str, option: str, message: str) -> Problem:
    file, _, section = origin.partition(" [")
    return Problem(message, file=file, section=section.rstrip("]") or None, option=option,
                   line=config.lines.get((origin, option)))


def findings(config: Config, cgroup_version: Optional[int] = None) -> List[Problem]:
    """One warning per option set in the configuration that has no effect here.
    cgroup_version: the host's (1 or 2), read from this host when not given."""
    found = []
    s = config.settings
    for name, useless, reason in SETTINGS_NOTES:
        origin = _set_by(s.origins, name)
        value = getattr(s, name)
        if origin and (useless is None or value == useless):
            found.append(_located(config, origin, name, f"{name} = {_shown(value)}: accepted "
                                  f"but not supported: {reason}"))
    for _, mt in sorted(config.machinetypes.items()):
        for name, models, reason in MACHINETYPE_NOTES:
            origin = _set_by(mt.origins, name)
            value = getattr(mt, name)
            if origin and value not in (None, ()) and mt.machine_model not in models:
                found.append(_located(config, origin, name, f"{name} = {_shown(value)}: "
                                      f"accepted but not supported: {reason} (machine_model "
                                      f"is {mt.machine_model})"))
    return found + _v1_findings(config, cgroup_version)


def _v1_findings(config: Config, cgroup_version: Optional[int]) -> List[Problem]:
    """The options set for container machinetypes that a cgroup v1 host ignores (a VM's
    are noted above already)."""
    if cgroup_version is None:
        cgroup_version = cgroups.read_hierarchy().version
    if cgroup_version == 2:
        return []
    found = []
    for _, mt in sorted(config.machinetypes.items()):
        for name, reason in V1_MACHINETYPE_NOTES:
            origin = _set_by(mt.origins, name)
            if origin and mt.machine_model in CONTAINER_MODELS:
                found.append(_located(config, origin, name, f"{name} = "
                                      f"{_shown(getattr(mt, name))}: accepted but not "
                                      f"supported: {reason}"))
    return found


def notes(config: Config) -> List[str]:
    """findings() as text, each with its line."""
    return [p.located() for p in findings(config)]
