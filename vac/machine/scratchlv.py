# SPDX-License-Identifier: BSD-2-Clause
"""A container machine's scratch on a thin LV, and the removal of this factory's leftover LVs.

ThinVolume is the lvm-thin mechanism's maker (vac.machine.scratch.Maker): a thin volume of
volume_group's thin pool, named exactly as the machine directory (<created>_<machinetype>_
<machine>), of the scratch's size rounded up to whole extents, with an ext4 filesystem made on
it and mounted (nosuid, nodev, discard: what the payload deletes goes back to the pool) at the
mount point the loop mechanism uses, <state_dir>/scratch/<machine directory name>. Named for
the directory, not the slot, so a finished machine's volume that is still busy never stands
in the way of the next machine of its slot. drop() removes it after the unmount.

release_leftovers() removes, once a cycle, the volumes of this factory that nothing living
holds (a vacd killed between the unmount and the lvremove, a failed destroy, a factory that
was the original Vac's). A volume is this factory's if its name is
    one of its slots' machine names (host-NN.domain): its VMs' disks, and every volume the
        original Vac made (it named each machine's LV, VM or container, as the machine), or
    one of its machine directories' names (<created>_<machinetype>_host-NN.domain): the
        container scratch volumes above.
A slot-named volume is kept while its slot's current machine is unfinished and uses such a
volume: a VM (its disk), or a machine adopted from the original Vac (whatever it is); a
directory-named one while its machine directory is unfinished. So an adopted running machine
keeps its volume, and the original's volume of a container that has finished goes even when
the slot holds a new machine. Otherwise it is unmounted wherever it is mounted (the original
mounted a container's at <machine dir>/mnt) and removed. A volume of any other name (another
factory's, the admin's, the thin pool) is never touched.
"""
from __future__ import annotations

import logging
import os
import stat
from typing import Collection, List, Optional, Set

from vac import subp
from vac.errors import ProcessError
from vac.host import lvm
from vac.machine import scratch
from vac.machine.directory import unfinished_machines
from vac.machine.slots import ordinal_of
from vac.paths import Paths

log = logging.getLogger(__name__)

MOUNT_OPTIONS = "nosuid,nodev,discard"
_said: Set[str] = set()


class ThinVolume:
    """Makes scratch filesystems on thin volumes of group/pool; `run` runs every command."""

    def __init__(self, group: str, pool: str, run: Optional[lvm.Runner] = None):
        self.group = group
        self.pool = pool
        self.run = run

    def make(self, state_dir: str, name: str, size: int) -> str:
        """Mount point of a new filesystem of about `size` bytes on the thin volume `name`
        (a leftover of the name replaced).

        Raises:
            ScratchError: a step failed (the volume and the mount point are removed again).
        """
        target = scratch.mount_point(state_dir, name)
        scratch.remove(state_dir, name)     # a leftover mount; lvm.create replaces the volume
        os.makedirs(scratch.pool(state_dir), mode=0o711, exist_ok=True)
        run = self.run or subp.run
        try:
            group = lvm.read_group(self.group, self.run)
            dev = lvm.create(group, name, lvm.whole_extents(size, group.extent), self.pool,
                             self.run)
            os.mkdir(target, 0o700)
            run(scratch.MKFS + [dev], timeout=scratch.TIMEOUT)
            run(["mount", "-t", "ext4", "-o", MOUNT_OPTIONS, dev, target],
                timeout=scratch.TIMEOUT)
            os.chmod(target, 0o1777)
        except (OSError, ProcessError, lvm.LvmError) as e:
            _undo(state_dir, name, self)
            raise scratch.ScratchError(f"cannot make a {size}-byte scratch on a thin volume "
                                       f"of {self.group}/{self.pool} at {target}: {e}") from e
        return target

    def drop(self, name: str) -> bool:
        """Remove the volume `name` (unmounted already); False if there was none.

        Raises:
            ScratchError: lvremove failed.
        """
        try:
            return lvm.remove(self.group, name, self.run)
        except lvm.LvmError as e:
            raise scratch.ScratchError(str(e)) from e


def _undo(state_dir: str, name: str, maker: ThinVolume) -> None:
    """What a failed make left, removed; a failure here is logged (the leftover sweep
    retries), the make's own error is the one raised."""
    try:
        scratch.remove(state_dir, name, maker)
    except scratch.ScratchError as e:
        log.warning("%s: %s", name, e)


# Leftovers -------------------------------------------------------------------------------

def release_leftovers(paths: Paths, factory_name: str, vg: str, vm_models: Collection[str],
                      run: Optional[lvm.Runner] = None) -> List[str]:
    """Remove this factory's volumes in vg that nothing living holds; return their names.
    vm_models: the machine models whose machines have a slot-named volume as their disk.
    Never raises: what fails is logged and tried again next time."""
    try:
        group = lvm.read_group(vg, run)
    except lvm.LvmError as e:
        _say(f"leftover logical volumes not looked for: {e}")
        return []
    live = {name for name, record, directory in unfinished_machines(paths)
            if record.model in vm_models or directory.read_backend_record().get("adopted")}
    released = []
    for volume in group.listed:
        if volume.hidden or volume.is_thin_pool or \
                not leftover(volume.name, factory_name, paths, live):
            continue
        try:
            for point in _mounts(vg, volume.name):
                scratch.unmount(point)
            if lvm.remove(vg, volume.name, run):
                log.warning("%s/%s: removed the logical volume a finished machine left", vg,
                            volume.name)
                released.append(volume.name)
        except (scratch.ScratchError, lvm.LvmError) as e:
            log.warning("%s/%s: %s", vg, volume.name, e)
    return released


def leftover(name: str, factory_name: str, paths: Paths, live: Set[str]) -> bool:
    """Is the volume `name` this factory's with nothing living holding it? live: the slots
    whose current machine is unfinished and has a slot-named volume."""
    if ordinal_of(factory_name, name) >= 0:
        return name not in live
    parts = name.split("_")
    if len(parts) != 3 or not parts[0].isdigit() or ordinal_of(factory_name, parts[2]) < 0:
        return False
    directory = os.path.join(paths.machines, name)
    return not os.path.isdir(directory) or os.path.lexists(os.path.join(directory, "finished"))


def _mounts(vg: str, name: str) -> List[str]:
    """Where vg/name is mounted (nowhere when it has no device node: not active)."""
    try:
        st = os.stat(lvm.device(vg, name))
    except OSError:
        return []
    return scratch.mounts_of(st.st_rdev) if stat.S_ISBLK(st.st_mode) else []


def _say(message: str) -> None:
    """A warning once per process for each distinct message (a cycle repeats them)."""
    if message not in _said:
        _said.add(message)
        log.warning("%s", message)
