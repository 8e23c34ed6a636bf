# SPDX-License-Identifier: BSD-2-Clause
"""A container machine's scratch area as its backend makes, binds and removes it:
bounded, so no machine can fill the host.

The Docker (and Podman) and Apptainer backends call make() while creating a machine: when its
machinetype or [settings] sets disk_gb_per_processor and this host has a mechanism
(vac.machine.scratch.choose, asked once per process), the scratch is made and mounted, MJF
jobfeatures/scratch_limit_bytes says its size, and the host path is returned for the backend
to bind read-write at CONTAINER_PATH (/scratch): on a thin LV of volume_group's pool
(vac.machine.scratchlv), in a loop-mounted file, or a directory bounded by a project quota
(vac.machine.scratchquota); an Apptainer machine's --workdir (its /tmp,
/var/tmp and home) goes there too (workdir()). Such a machine's joboutputs/ is capped too, at
joboutputs_machine_mb: a loop-mounted file system (vac.machine.joboutputcap), or on a host
whose scratch is a project quota a project limit of its own (ProjectQuota.bound; vacd lifts it
to write its own message, vac.machine.joboutputquota). remove() and
release_leftovers() undo both, the capped joboutputs' files copied back into the plain
directory, and remove the machine's LV; release_leftovers() also removes every leftover LV of
this factory in volume_group (the original Vac's too), never another's, and never a living
machine's.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

from vac.backends.base import MachineSpec
from vac.config import models
from vac.errors import BackendError
from vac.host import lvm
from vac.machine import joboutputcap, scratch, scratchlv, scratchquota
from vac.machine.directory import MachineDir
from vac.machine.slots import ordinal_of

log = logging.getLogger(__name__)

CONTAINER_PATH = scratch.CONTAINER_PATH
APPTAINER_WORKDIR = ".apptainer"
MIB = 1024 * 1024
_chosen: Dict[Optional[str], scratch.Mechanism] = {}
_said: List[str] = []


def mechanism(volume_group: Optional[str],
              state_dir: Optional[str] = None) -> scratch.Mechanism:
    """This host's mechanism for this volume_group (and state directory, whose filesystem
    may hold project quotas), chosen on first use."""
    if volume_group not in _chosen:
        _chosen[volume_group] = scratch.choose(volume_group, state_dir=state_dir)
        log.info("container scratch: %s (%s)", _chosen[volume_group].name,
                 _chosen[volume_group].detail)
    return _chosen[volume_group]


def maker(volume_group: Optional[str],
          state_dir: Optional[str] = None) -> Optional[scratch.Maker]:
    """How this host's scratch is made and dropped: a thin LV's or a project quota's maker,
    None for the loop."""
    chosen = mechanism(volume_group, state_dir)
    if chosen.name == scratch.LVM_THIN:
        return scratchlv.ThinVolume(chosen.group, chosen.pool)
    if chosen.name == scratch.QUOTA and state_dir:
        return scratchquota.ProjectQuota(state_dir)
    return None


def make(spec: MachineSpec, backend: str) -> Optional[str]:
    """The host path of the new machine's mounted scratch, or None when it gets none.

    Raises:
        BackendError: the scratch could not be made (the machine is not started).
    """
    s = spec.settings
    size = scratch.limit_bytes(spec.machinetype.disk_gb_per_processor,
                               s.disk_gb_per_processor, spec.processors)
    if size is None:
        return None
    chosen = mechanism(s.volume_group, s.paths.state_dir)
    if chosen.name == scratch.NONE:
        if not _said:
            _said.append(chosen.detail)
            log.warning("disk_gb_per_processor is set but this host cannot bound a container's "
                        "scratch (%s): containers run without one", chosen.detail)
        return None
    made = maker(s.volume_group, s.paths.state_dir)
    try:
        area = scratch.create(s.paths.state_dir, spec.directory, size, made)
    except scratch.ScratchError as e:
        raise BackendError(backend, str(e), spec.name) from e
    try:
        if chosen.name == scratch.QUOTA:
            made.bound(spec.directory.file(joboutputcap.NAME), s.joboutputs_machine_mb * MIB)
        else:
            joboutputcap.make(s.paths.state_dir, spec.directory, s.joboutputs_machine_mb * MIB)
    except scratch.ScratchError as e:
        try:
            scratch.remove(s.paths.state_dir, os.path.basename(spec.directory.path), made)
        except scratch.ScratchError as undo:
            log.warning("%s: %s", spec.name, undo)
        raise BackendError(backend, str(e), spec.name) from e
    return area


def workdir(area: Optional[str], user: Any) -> Optional[str]:
    """Apptainer's --workdir (the container's /tmp, /var/tmp, home) inside the scratch, made
    0700 for the user (a pwd entry); None without a scratch."""
    if not area:
        return None
    path = os.path.join(area, APPTAINER_WORKDIR)
    try:
        if not os.path.isdir(path):
            os.mkdir(path, 0o700)
        os.chown(path, user.pw_uid, user.pw_gid, follow_symlinks=False)
    except OSError as e:
        raise BackendError("apptainer", f"cannot make the work directory {path}: {e}") from e
    return path


def remove(settings: Any, directory: Optional[MachineDir], backend: str) -> bool:
    """Remove the machine's scratch (if it has one); True if it had.

    Raises:
        BackendError: it stays mounted (the next cycle's release_leftovers tries again).
    """
    if directory is None:
        return False
    try:
        capped = joboutputcap.release(directory)
        return scratch.remove(settings.paths.state_dir, os.path.basename(directory.path),
                              maker(settings.volume_group, settings.paths.state_dir)) or capped
    except (scratch.ScratchError, OSError) as e:
        raise BackendError(backend, str(e), directory.name) from e


def release(settings: Any, directory: MachineDir) -> bool:
    """A finished machine's scratch left by an interrupted destroy, removed; never raises."""
    try:
        return remove(settings, directory, "scratch")
    except BackendError as e:
        log.warning("%s", e)
        return False


def release_leftovers(settings: Any, factory_name: str) -> List[str]:
    """The scratch, and the capped joboutputs, of this factory's finished machines; then its
    logical volumes that nothing living holds."""
    state = settings.paths.state_dir
    quota = maker(settings.volume_group, state)
    released = scratch.release_leftovers(
        state, factory_name, quota if isinstance(quota, scratchquota.ProjectQuota) else None)
    for name, path in joboutputcap.mounted_in(state, scratch.mounted()):
        directory = MachineDir(path)
        if ordinal_of(factory_name, name.split("_")[-1]) >= 0 and directory.finished is not None \
                and release(settings, directory) and name not in released:
            released.append(name)
    return released + [name for name in release_volumes(settings, factory_name)
                       if name not in released]


def release_volumes(settings: Any, factory_name: str) -> List[str]:
    """This factory's leftover LVs in volume_group removed (none without one, or where LVM
    cannot work); the names removed."""
    if not settings.volume_group or lvm.missing():
        return []
    return scratchlv.release_leftovers(settings.paths, factory_name, settings.volume_group,
                                       models.VM_MODELS)
