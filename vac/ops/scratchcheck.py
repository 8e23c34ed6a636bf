# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s scratch check: how this host bounds container machines' scratch.

    ok    the mechanism (loop: an ext4 file system in a sparse file per machine) and why the
          better ones are passed over, proved by a trial scratch filled past its end, with the
          pool's free space, and how their joboutputs/ are capped; or no container
          machinetype asks for scratch
    warn  containers ask for scratch (disk_gb_per_processor) but this host has no mechanism:
          they run without one, their writes unbounded
    fail  the mechanism is there but the trial failed
"""
from __future__ import annotations

import shutil
from typing import Dict, List

from vac.config.model import MachineType, Settings
from vac.machine import scratch
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
    chosen = scratch.choose(settings.volume_group)
    if chosen.name == scratch.NONE:
        return [Check(NAME, WARN, f"{', '.join(asking)} set disk_gb_per_processor but this "
                                  f"host cannot bound a scratch: {chosen.detail}; they run "
                                  "without /scratch", "run vacd as root on a host with loop "
                                  "devices and mkfs.ext4 (e2fsprogs)")]
    state = settings.paths.state_dir
    try:
        scratch.trial(state)
    except scratch.ScratchError as e:
        return [Check(NAME, FAIL, f"{chosen.name}: the trial scratch failed: {e}",
                      "see the error: loop devices, mkfs.ext4 and mount must work for root")]
    free = scratch.free_bytes(state)
    return [Check(NAME, OK, f"{chosen.name}: {chosen.detail}; trial filled to ENOSPC; pool "
                            f"{scratch.pool(state)} has {free / GB:.1f} GB free; for "
                            f"{', '.join(asking)} at {scratch.CONTAINER_PATH}; "
                            f"{_capped(settings)}")]


def _capped(settings: Settings) -> str:
    """How those machines' joboutputs/ are bounded."""
    if not shutil.which("tune2fs"):
        return "their joboutputs/ not capped (no tune2fs: install e2fsprogs)"
    return f"their joboutputs/ capped at joboutputs_machine_mb {settings.joboutputs_machine_mb} MiB"
