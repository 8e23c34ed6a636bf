# SPDX-License-Identifier: BSD-2-Clause
"""What a Docker machine's container is made of: image, labels, cgroup parent, mounts, limits.

Pure builders of the arguments vac.backends.docker.backend gives the engine
(APIClient.create_container and create_host_config), and the preparation of the machine
directory whose parts the container binds: MJF read-only at /etc/machinefeatures and
/etc/jobfeatures, joboutputs read-write at /var/spool/joboutputs, user_data (the command)
read-only at /user_data, /cvmfs once its repositories are listed, and a fresh directory for each
tmp_binds path. Nothing here talks to the engine or needs the docker package.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
from typing import Any, Dict, List, Optional

from vac.backends.base import MachineSpec
from vac.backends.docker.network import network_mode
from vac.config.limits import engine_ulimits
from vac.errors import BackendError
from vac.host.cgroups import PARENT, cpu_shares
from vac.machine.directory import MachineDir

NAME = "docker"
IMAGE_PREFIX = "docker://"
MACHINEFEATURES = "/etc/machinefeatures"
JOBFEATURES = "/etc/jobfeatures"
JOBOUTPUTS = "/var/spool/joboutputs"
USER_DATA = "/user_data"
CVMFS = "/cvmfs"
MIB = 1024 * 1024
CGROUP_ROOT = f"/{PARENT}"
CVMFS_REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TARGET_RE = re.compile(r"^(/[A-Za-z0-9._+@-]+)+$")


# What to ask the engine for ------------------------------------------------------------------

def image_of(root_image: Optional[str]) -> str:
    """docker://REF -> REF.

    Raises:
        BackendError: not a docker:// reference.
    """
    if not root_image or not root_image.startswith(IMAGE_PREFIX) or \
            len(root_image) == len(IMAGE_PREFIX) or any(c.isspace() for c in root_image):
        raise BackendError(NAME, f"root_image {root_image!r} is not docker://<image>")
    return root_image[len(IMAGE_PREFIX):]


def labels_for(spec: MachineSpec) -> Dict[str, str]:
    """The labels that mark a container as this factory's machine."""
    return {"vac.space": spec.settings.vac_space, "vac.factory": spec.settings.factory_name,
            "vac.machine": spec.name, "vac.machinetype": spec.machinetype.name,
            "vac.created": str(spec.created)}


def cgroup_parent_for(directory: MachineDir) -> str:
    """The per-machine cgroup parent (cgroupfs driver): /vac/docker-<machine dir name>."""
    return f"{CGROUP_ROOT}/docker-{os.path.basename(directory.path)}"


def bind(source: str, target: str, read_only: bool) -> Dict[str, Any]:
    """A bind mount in the engine's Mounts format (a missing source is an error, not a dir)."""
    return {"Type": "bind", "Source": source, "Target": target, "ReadOnly": read_only}


def container_args(spec: MachineSpec) -> Dict[str, Any]:
    """Keyword arguments of APIClient.create_container (without image and host_config)."""
    return {"command": [spec.machinetype.container_command], "name": spec.name,
            "hostname": spec.name, "labels": labels_for(spec), "detach": True,
            "environment": {"MACHINEFEATURES": MACHINEFEATURES, "JOBFEATURES": JOBFEATURES,
                            "JOBOUTPUTS": JOBOUTPUTS},
            "use_config_proxy": False}


def host_config_args(spec: MachineSpec, mounts: List[Dict[str, Any]],
                     cgroup_parent: Optional[str]) -> Dict[str, Any]:
    """Keyword arguments of APIClient.create_host_config: limits, binds, no privileges."""
    mt = spec.machinetype
    memory = spec.memory_mb * MIB
    args: Dict[str, Any] = {"mounts": list(mounts), "cpu_shares": cpu_shares(spec.processors),
                            "security_opt": ["no-new-privileges"], "privileged": False,
                            "network_mode": network_mode(mt)}
    if mt.docker_pids_limit > 0:
        args["pids_limit"] = mt.docker_pids_limit
    if mt.docker_ulimits:
        try:
            args["ulimits"] = engine_ulimits(mt.docker_ulimits)
        except ValueError as e:  # the configuration check lets none through
            raise BackendError(NAME, f"docker_ulimits: {e}", spec.name) from e
    if mt.docker_hard_cpu:
        args["nano_cpus"] = spec.processors * 10**9
    if mt.docker_hard_memory:
        args["mem_limit"] = memory
        args["memswap_limit"] = memory
    else:
        args["mem_reservation"] = memory
    if cgroup_parent:
        args["cgroup_parent"] = cgroup_parent
    return args



# Preparing the machine directory -------------------------------------------------------------

def _real_dir(path: str) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise BackendError(NAME, f"{path} is missing") from None
    if not stat.S_ISDIR(mode):
        raise BackendError(NAME, f"{path} is not a directory (symlink?); refused")
    return path


def check_target(path: str, taken: List[str]) -> str:
    """A tmp_binds container path from a pipe: absolute, plain, not one of ours.

    Raises:
        BackendError: anything else.
    """
    if not TARGET_RE.match(path) or path != os.path.normpath(path) or path in taken:
        raise BackendError(NAME, f"tmp_binds path {path!r} refused: it must be an absolute "
                                 f"path of letters, digits and ._+@- not used by Vac")
    return path


def prepare_mounts(spec: MachineSpec, cvmfs_root: str = CVMFS) -> List[Dict[str, Any]]:
    """Make the directory ready (user_data 0755, mnt/, tmp_binds dirs, cvmfs listed) and
    return the bind mounts, read-only except joboutputs and the tmp_binds."""
    d, mt = spec.directory, spec.machinetype
    mounts = [bind(_real_dir(d.file("joboutputs")), JOBOUTPUTS, False),
              bind(_real_dir(d.file("machinefeatures")), MACHINEFEATURES, True),
              bind(_real_dir(d.file("jobfeatures")), JOBFEATURES, True)]
    user_data = d.file("user_data")
    if os.path.lexists(user_data):
        if not stat.S_ISREG(os.lstat(user_data).st_mode):
            raise BackendError(NAME, f"{user_data} is not a regular file; refused", spec.name)
        os.chmod(user_data, 0o755)
        mounts.append(bind(user_data, USER_DATA, True))
    elif mt.container_command == USER_DATA:
        raise BackendError(NAME, f"container_command is {USER_DATA} but machinetype {mt.name} "
                                 f"has no user_data", spec.name)
    if mt.cvmfs_repositories:
        for repo in mt.cvmfs_repositories:
            _list_cvmfs(cvmfs_root, repo)
        mounts.append(bind(cvmfs_root, CVMFS, True))
    mnt = d.file("mnt")
    if not os.path.lexists(mnt):
        os.mkdir(mnt, 0o755)
    _real_dir(mnt)
    taken = [m["Target"] for m in mounts]
    for path in mt.tmp_binds:
        taken.append(check_target(path, taken))
        host = tempfile.mkdtemp(prefix=path.replace("/", "_")[:30], dir=mnt)
        os.chmod(host, 0o755)
        mounts.append(bind(host, path, False))
    return mounts


def with_scratch(mounts: List[Dict[str, Any]], area: Optional[str],
                 target: str) -> List[Dict[str, Any]]:
    """The mounts with the machine's bounded scratch (vac.backends.scratchmount) bound
    read-write at target, in place of a tmp_binds bind of the same path; unchanged without."""
    if not area:
        return mounts
    return [m for m in mounts if m["Target"] != target] + [bind(area, target, False)]


def _list_cvmfs(cvmfs_root: str, repo: str) -> None:
    """List /cvmfs/<repo> so autofs mounts it before the container binds /cvmfs."""
    if not CVMFS_REPO_RE.match(repo):
        raise BackendError(NAME, f"cvmfs repository name {repo!r} refused")
    try:
        os.listdir(os.path.join(cvmfs_root, repo))
    except OSError as e:
        raise BackendError(NAME, f"cvmfs repository {repo} not available at "
                                 f"{os.path.join(cvmfs_root, repo)}: {e.strerror}") from e
