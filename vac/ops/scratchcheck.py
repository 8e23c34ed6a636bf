# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s scratch check: how this host bounds container machines' scratch.

    ok    the mechanism (lvm-thin: an ext4 file system on a thin LV per machine in
          volume_group's thin pool; loop: one in a sparse file per machine; project-quota: a
          directory per machine bounded by a project quota on the state directory's XFS) and
          why the better ones are passed over, proved by a trial scratch filled past its end,
          with the free space of the thin pool or of the pool directory's filesystem, and how
          their joboutputs/ are capped; or no container machinetype asks for scratch
    warn  containers ask for scratch (disk_gb_per_processor) but this host has no mechanism:
          they run without one, their writes unbounded
    fail  the mechanism is there but the trial failed
"""
from __future__ import annotations

import shutil
from typing import Dict, List, Optional

from vac.config.model import MachineType, Settings
from vac.host import lvm
from vac.machine import scratch, scratchlv, scratchquota
from vac.ops.checks import FAIL, OK, WARN, Check

NAME = "scratch"
CONTAINER_BACKENDS = ("docker", "podman", "apptainer")
GB = 10 ** 9


def host_scratch(settings: Settings, used: Dict[str, List[MachineType]]) -> List[Check]:
    """One line: the scratch mechanism of this host for the container machinetypes."""
    asking = sorted(mt.name for name in CONTAINER_BACKENDS for mt in used.get(name, ())
                    if scratch.limit_bytes(mt.disk_gb_per_processor,
                                           settings.disk_gb_per_processor, 1) is not None)
    if not asking:
        return [Check(NAME, OK, "no container machinetype sets disk_gb_per_processor: "
                                "containers get no /scratch")]
    state = settings.paths.state_dir
    chosen = scratch.choose(settings.volume_group, state_dir=state)
    maker = _maker(chosen, state)
    if chosen.name == scratch.NONE:
        return [Check(NAME, WARN, f"{', '.join(asking)} set disk_gb_per_processor but this "
                                  f"host cannot bound a scratch: {chosen.detail}; they run "
                                  "without /scratch", "run vacd as root on a host with loop "
                                  "devices and mkfs.ext4 (e2fsprogs), or with lvm2 and a "
                                  f"thin pool ({lvm.POOL_NAME}) in volume_group, or with the "
                                  "state directory on XFS mounted with prjquota")]
    try:
        scratch.trial(state, maker)
    except scratch.ScratchError as e:
        return [Check(NAME, FAIL, f"{chosen.name}: the trial scratch failed: {e}",
                      _trial_fix(chosen))]
    return [Check(NAME, OK, f"{chosen.name}: {chosen.detail}; trial filled to ENOSPC; "
                            f"{_free(chosen, state)}; for "
                            f"{', '.join(asking)} at {scratch.CONTAINER_PATH}; "
                            f"{_capped(settings, chosen)}")]


def _maker(chosen: scratch.Mechanism, state: str) -> Optional[scratch.Maker]:
    """The chosen mechanism's maker (None: the loop's, scratch's default)."""
    if chosen.name == scratch.LVM_THIN:
        return scratchlv.ThinVolume(chosen.group, chosen.pool)
    if chosen.name == scratch.QUOTA:
        return scratchquota.ProjectQuota(state)
    return None


def _trial_fix(chosen: scratch.Mechanism) -> str:
    """What must work for the chosen mechanism's trial."""
    if chosen.name == scratch.LVM_THIN:
        return "see the error: lvcreate in the thin pool, mkfs.ext4 and mount must work for root"
    if chosen.name == scratch.QUOTA:
        return ("see the error: setting a project ID and a project quota limit under the "
                "state directory must work for root")
    return "see the error: loop devices, mkfs.ext4 and mount must work for root"


def _free(chosen: scratch.Mechanism, state: str) -> str:
    """The free space the scratch areas grow into: the thin pool's, or the pool directory's."""
    if chosen.name == scratch.LVM_THIN:
        try:
            group = lvm.read_group(chosen.group)
        except lvm.LvmError as e:
            return f"thin pool {chosen.group}/{chosen.pool} unread: {e}"
        return (f"thin pool {chosen.group}/{chosen.pool} has "
                f"{group.pool_free(chosen.pool) / GB:.1f} GB of "
                f"{group.pool_size(chosen.pool) / GB:.1f} GB free")
    return f"pool {scratch.pool(state)} has {scratch.free_bytes(state) / GB:.1f} GB free"


def _capped(settings: Settings, chosen: scratch.Mechanism) -> str:
    """How those machines' joboutputs/ are bounded."""
    if chosen.name == scratch.QUOTA:
        return (f"their joboutputs/ capped at joboutputs_machine_mb "
                f"{settings.joboutputs_machine_mb} MiB by a project quota")
    if not shutil.which("tune2fs"):
        return "their joboutputs/ not capped (no tune2fs: install e2fsprogs)"
    return f"their joboutputs/ capped at joboutputs_machine_mb {settings.joboutputs_machine_mb} MiB"
