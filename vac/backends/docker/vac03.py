# SPDX-License-Identifier: BSD-2-Clause
"""Recognising the containers the original Vac 03 started, so a switched factory adopts them.

Vac 03 ran `docker run --detach ... -v <machine dir>/joboutputs:/var/spool/joboutputs ...
--name <machine> --hostname <machine> <image> <command>`: no labels, the
machine's FQDN as container name and hostname, its machine directory bound in. A container is
taken for Vac 03's only if all of that holds for one machine directory: its name and hostname
are the machine's, it carries no `vac.*` label, and its /var/spool/joboutputs is that machine
directory's joboutputs/. A name alone (or a name prefix) never makes a container ours.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Mapping, Optional

from vac.backends.docker.spec import JOBOUTPUTS
from vac.errors import StateError
from vac.machine.directory import MachineDir
from vac.paths import Paths

ADOPTED = "vac03"
MIB = 1024 * 1024


def _labels(attrs: Mapping[str, Any]) -> Mapping[str, str]:
    return (attrs.get("Config") or {}).get("Labels") or {}


def container_name(attrs: Mapping[str, Any]) -> str:
    return str(attrs.get("Name") or "").lstrip("/")


def joboutputs_source(attrs: Mapping[str, Any]) -> Optional[str]:
    """The host directory bound at /var/spool/joboutputs, or None."""
    for mount in attrs.get("Mounts") or []:
        if isinstance(mount, dict) and mount.get("Destination") == JOBOUTPUTS and \
                mount.get("Type", "bind") == "bind":
            source = mount.get("Source")
            return os.path.normpath(source) if isinstance(source, str) and source else None
    return None


def unlabelled(attrs: Mapping[str, Any]) -> bool:
    return not any(str(key).startswith("vac.") for key in _labels(attrs))


def started_by_vac03(attrs: Mapping[str, Any], directory: MachineDir) -> bool:
    """True if this container is the one Vac 03 started for this machine directory."""
    name = directory.name
    hostname = str((attrs.get("Config") or {}).get("Hostname") or "")
    wanted = directory.file("joboutputs")
    return (unlabelled(attrs) and container_name(attrs) == name and hostname == name
            and joboutputs_source(attrs) in (os.path.normpath(wanted), os.path.realpath(wanted)))


def vac03_directory(attrs: Mapping[str, Any], paths: Paths) -> Optional[MachineDir]:
    """The machine directory (existing or not) a Vac 03 container of this factory was started
    for, or None if the container does not look like one of Vac 03's for this state dir."""
    source = joboutputs_source(attrs)
    if not unlabelled(attrs) or source is None or os.path.basename(source) != "joboutputs":
        return None
    machine = os.path.dirname(source)
    if os.path.dirname(machine) not in (os.path.normpath(paths.machines),
                                        os.path.realpath(paths.machines)):
        return None
    try:
        directory = MachineDir(os.path.join(paths.machines, os.path.basename(machine)))
    except StateError:
        return None
    hostname = str((attrs.get("Config") or {}).get("Hostname") or "")
    return directory if directory.name == container_name(attrs) == hostname else None


def earlier_leftover(attrs: Mapping[str, Any], name: str, directory: MachineDir,
                     paths: Paths) -> bool:
    """A container Vac 03 started for an earlier machine `name` of this slot whose directory
    is finished or gone (not `directory`, the one being created)."""
    earlier = vac03_directory(attrs, paths)
    if earlier is None or earlier.name != name or earlier.path == directory.path:
        return False
    return not os.path.isdir(earlier.path) or earlier.exists("finished")


def adoption_record(attrs: Mapping[str, Any], directory: MachineDir) -> Dict[str, Any]:
    """What backend.json records of an adopted container."""
    host = attrs.get("HostConfig") or {}
    memory = host.get("Memory") or host.get("MemoryReservation") or 0
    return {"backend": "docker", "adopted": ADOPTED, "container_id": str(attrs.get("Id", "")),
            "image": str((attrs.get("Config") or {}).get("Image", "")),
            "cgroup_driver": "", "cgroup_parent": str(host.get("CgroupParent") or ""),
            "memory_mb": int(memory) // MIB if isinstance(memory, int) else 0,
            "processors": directory.processors}
