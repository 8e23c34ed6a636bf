"""The names of the cgroups Apptainer machines live in: ours, apptainer-<machine name>, and the
original Vac's, singularity-<job_id>, under the configured cgroup parent."""
from __future__ import annotations

CGROUP_PREFIX = "apptainer-"
LEGACY_CGROUP_PREFIX = "singularity-"  # the original Vac's vac/singularity-<job_id>


def cgroup_name(machine_name: str) -> str:
    return CGROUP_PREFIX + machine_name
