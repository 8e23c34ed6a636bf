# SPDX-License-Identifier: BSD-2-Clause
"""The engine's storage, from its /info: where it keeps images and the containers' writable
layers (its data root: Docker's DockerRootDir; Podman's compatible API answers its storage's
graph root there, the user's own for a rootless Podman), which admission by free disk space
watches (vac.cycle.hostdisk, vac.backends.base.Backend.data_root); and whether its storage
driver can bound a container's writable layer.

The writable layer: the engine's size option (HostConfig.StorageOpt {"size": bytes}) bounds
it where the storage driver takes one: devicemapper and zfs always; overlay2 (Podman's
overlay) and vfs only when the data root is on xfs mounted with project quotas (pquota,
shown as prjquota), which is what the engine itself checks before it refuses the option;
btrfs only with its quotas enabled, which /info does not say, so it is not tried; a rootless
Podman never (the user cannot set project quotas). Where it can, a container machine's layer
is bounded to its scratch size (disk_gb_per_processor x processors); elsewhere the layer is
watched only through the data root's free space, and `vac doctor` says which and why.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Set

from vac import fsutil
from vac.host.cgroups import unescape_mount_field

ROOT_KEY = "DockerRootDir"
SIZED = ("devicemapper", "zfs")               # the driver bounds a container's layer itself
QUOTA = ("overlay2", "overlay", "vfs")        # only on xfs mounted with project quotas
QUOTA_OPTIONS = frozenset({"prjquota", "pquota"})
MOUNTINFO = "/proc/self/mountinfo"
MOUNTINFO_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class Layer:
    """Whether the engine bounds a new container's writable layer, and why, in words."""

    bounded: bool
    why: str


def data_root(info: Mapping[str, Any]) -> Optional[str]:
    """The data root an /info answer names: an absolute path, else None (none named, or
    something else: the engine's answer is not trusted further)."""
    root = info.get(ROOT_KEY) if isinstance(info, Mapping) else None
    if not isinstance(root, str) or not root.startswith("/") or "\0" in root:
        return None
    return root


def layer(info: Mapping[str, Any], mountinfo: str, rootless: bool = False) -> Layer:
    """Can the engine that gave this /info bound a container's writable layer (the size
    option)? `mountinfo`: the host's /proc/self/mountinfo, for the data root's options."""
    driver = str(info.get("Driver") or "") if isinstance(info, Mapping) else ""
    named = f"storage driver {driver or '(not named)'}"
    if rootless:
        return Layer(False, f"{named} of a rootless Podman: the user's storage has no "
                            f"project quotas")
    if driver in SIZED:
        return Layer(True, f"{named} takes a size")
    if driver not in QUOTA:
        return Layer(False, f"{named} takes no size here")
    backing = backing_filesystem(info)
    root = data_root(info)
    if backing == "xfs" and root and mount_options(root, mountinfo) & QUOTA_OPTIONS:
        return Layer(True, f"{named} on xfs with project quotas takes a size")
    where = "xfs without project quotas" if backing == "xfs" else (backing or "a file system "
                                                                   "it does not name")
    return Layer(False, f"{named} on {where} takes no size (it needs xfs mounted with pquota)")


def backing_filesystem(info: Mapping[str, Any]) -> str:
    """The driver's "Backing Filesystem" from /info's DriverStatus ('' if not said)."""
    status = info.get("DriverStatus") if isinstance(info, Mapping) else None
    for pair in status if isinstance(status, list) else ():
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and \
                pair[0] == "Backing Filesystem" and isinstance(pair[1], str):
            return pair[1]
    return ""


def mount_options(path: str, mountinfo: str) -> Set[str]:
    """The mount and file system options of the mount holding `path` (the longest mount
    point above it), from mountinfo's text; none if no line holds it."""
    best, options = "", set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 10 or "-" not in fields[6:]:
            continue
        point = unescape_mount_field(fields[4])
        above = point == "/" or path == point or path.startswith(point.rstrip("/") + "/")
        if above and len(point) >= len(best):
            dash = fields.index("-", 6)
            extra = fields[dash + 3].split(",") if len(fields) > dash + 3 else []
            best, options = point, set(fields[5].split(",")) | set(extra)
    return options


def read_mountinfo(path: str = MOUNTINFO) -> str:
    """This host's mountinfo text ('' if it cannot be read)."""
    try:
        return fsutil.read_optional(path, MOUNTINFO_LIMIT) or ""
    except OSError:
        return ""


def size_option(size: Optional[int]) -> dict:
    """The create_host_config argument that bounds the writable layer to `size` bytes
    (nothing for None)."""
    return {"storage_opt": {"size": str(int(size))}} if size else {}
