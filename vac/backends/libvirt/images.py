# SPDX-License-Identifier: BSD-2-Clause
"""VM disks: root image resolution, qcow2 overlays, sparse disk files and logical volumes.

Root images (machinetype root_image):
    https://... or http://...  downloaded into the image cache (vac.fetch.fetch_to_cache); a
                               failed refresh falls back to the cached copy with a warning
    /absolute/path             used in place (e.g. /cvmfs/...); for a machinetype whose
                               root_image came from a Vacuum Pipe only /cvmfs/ paths are
                               accepted (a pipe must not point a VM at host files)
    name                       <machinetype_path>/files/<name> (one or more plain components)
The image must be a regular file. The cache is never written by a VM: vm-raw gets a qcow2
overlay in <state>/tmp whose backing file is the image; an image that itself names a backing
file or an external data file is refused (it could expose host files to the guest).

Disks without a volume group are sparse files in <state>/tmp; the backend unlinks them once
the VM has them open. With a volume group, each LM gets a logical volume named exactly as the
LM's FQDN (as the original named them), sized to whole extents: a thin volume when the group
has a thin pool for Vac (vac.host.lvm.thin_pool), else a thick one.
"""
from __future__ import annotations

import json
import logging
import os
import re
import stat
import tempfile
from typing import TYPE_CHECKING, Optional

from vac import subp
from vac.errors import BackendError, FetchError, ProcessError
from vac.host import lvm
from vac.host.lvm import VolumeGroup
from vac.machine.scratch import MJF_KEY as SCRATCH_MJF_KEY

if TYPE_CHECKING:
    from vac.config.model import MachineType, Settings
    from vac.machine.directory import MachineDir
    from vac.paths import Paths

log = logging.getLogger(__name__)

GB = 1000 ** 3
DEFAULT_DISK_GB_PER_PROCESSOR = 40
IMAGE_FORMATS = ("raw", "qcow2")
QEMU_IMG_TIMEOUT = 60.0
FETCH_TIMEOUT = 3600.0
ROOT_PREFIX = "root.disk."          # a VM's root disk file or qcow2 overlay in tmp/
SCRATCH_PREFIX = "scratch.disk."    # a vm-raw VM's scratch disk file in tmp/


def _error(message: str, machine: Optional[str] = None) -> BackendError:
    return BackendError("libvirt", message, machine)


# Root images ---------------------------------------------------------------------------

def resolve_root_image(machinetype: MachineType, paths: Paths, *,
                       timeout: float = FETCH_TIMEOUT) -> str:
    """The local path of the machinetype's root_image (downloading it if it is a URL).

    Raises:
        BackendError: no root_image, refused path, download failed with no cached copy, or
            not a regular file.
    """
    image = machinetype.root_image
    if not image:
        raise _error(f"machinetype {machinetype.name} has no root_image")
    if image.startswith(("https://", "http://")):
        path = _fetch(image, paths, timeout)
    elif image.startswith("/"):
        if _from_pipe(machinetype) and not _under(image, "/cvmfs"):
            raise _error(f"root_image {image!r} from a Vacuum Pipe must be under /cvmfs/")
        path = image
    else:
        if any(part in ("", ".", "..") for part in image.split("/")):
            raise _error(f"root_image {image!r} is not a plain file name")
        path = machinetype.files_path(image)
    try:
        st = os.stat(path)
    except OSError as e:
        raise _error(f"root_image {path}: {e.strerror or e}") from e
    if not stat.S_ISREG(st.st_mode):
        raise _error(f"root_image {path} is not a regular file")
    return path


def _from_pipe(machinetype: MachineType) -> bool:
    """True if root_image came from a pipe document rather than a local file."""
    origin = machinetype.origins.get("root_image", "")
    return machinetype.pipe is not None and not origin.startswith("/")


def _under(path: str, top: str) -> bool:
    norm = os.path.normpath(path)
    return norm == top or norm.startswith(top + "/")


def _fetch(url: str, paths: Paths, timeout: float) -> str:
    from vac.fetch import fetch_to_cache

    cache_path = paths.image_cache(url)
    try:
        return fetch_to_cache(url, cache_path, paths.tmp, timeout=timeout)
    except FetchError as e:
        if os.path.isfile(cache_path):
            log.warning("cannot refresh root image %s (%s); using the cached copy", url, e)
            return cache_path
        raise _error(f"cannot fetch root image: {e}") from e


def image_format(path: str) -> str:
    """The image's format (raw or qcow2) from qemu-img info, refusing chained images.

    Raises:
        BackendError: qemu-img failed, an unsupported format, or a backing/data file.
    """
    try:
        done = subp.run(["qemu-img", "info", "-U", "--output=json", path],
                        timeout=QEMU_IMG_TIMEOUT)
        info = json.loads(done.stdout)
    except ProcessError as e:
        raise _error(f"qemu-img info {path}: {e}") from e
    except ValueError as e:
        raise _error(f"qemu-img info {path}: unreadable output") from e
    fmt = info.get("format")
    if fmt not in IMAGE_FORMATS:
        raise _error(f"root image {path} has format {fmt!r}; only raw and qcow2 are used")
    if info.get("backing-filename") or info.get("full-backing-filename"):
        raise _error(f"root image {path} has a backing file; refused")
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise _error(f"root image {path} has an external data file; refused")
    return fmt


def create_overlay(image: str, tmp_dir: str) -> str:
    """A new qcow2 file in tmp_dir backed by image (which is only ever read).

    Raises:
        BackendError: the image is unusable or qemu-img failed.
    """
    fmt = image_format(image)
    fd, path = tempfile.mkstemp(prefix=ROOT_PREFIX, dir=tmp_dir)
    os.close(fd)
    try:
        subp.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b",
                  os.path.abspath(image), path], timeout=QEMU_IMG_TIMEOUT)
    except ProcessError as e:
        os.unlink(path)
        raise _error(f"cannot create an overlay over {image}: {e}") from e
    return path


# Sizes and sparse files ----------------------------------------------------------------

def disk_gb_per_processor(machinetype: MachineType, settings: Settings) -> Optional[int]:
    """The fixed disk size per processor if one applies (machinetype beats settings)."""
    if machinetype.disk_gb_per_processor is not None:
        return machinetype.disk_gb_per_processor
    return settings.disk_gb_per_processor


def sparse_disk_bytes(processors: int, gb_per_processor: Optional[int]) -> int:
    """Size of a file-backed disk: (gb_per_processor or 40) x processors x 10^9 bytes."""
    per = DEFAULT_DISK_GB_PER_PROCESSOR if gb_per_processor is None else gb_per_processor
    return per * processors * GB


def create_sparse_file(tmp_dir: str, prefix: str, size: int) -> str:
    """A new sparse file of `size` bytes in tmp_dir (no blocks allocated)."""
    fd, path = tempfile.mkstemp(prefix=prefix, dir=tmp_dir)
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        os.close(fd)
        os.unlink(path)
        raise _error(f"cannot make a {size}-byte disk file in {tmp_dir}: {e}") from e
    os.close(fd)
    return path


def export_scratch_limit(directory: MachineDir, disk_path: str) -> None:
    """Write the size of a VM's scratch disk (a sparse file or an LV's device) as the MJF
    jobfeatures/scratch_limit_bytes, as a container's bounded /scratch has it.

    Raises:
        BackendError: the disk's size could not be read or the key not written.
    """
    try:
        with open(disk_path, "rb") as f:      # a block device's size is where its end is
            size = f.seek(0, os.SEEK_END)
        directory.write(SCRATCH_MJF_KEY, str(size))
    except OSError as e:
        raise _error(f"cannot export the scratch disk's size of {directory.name}: {e}") from e


# Logical volumes (made by vac.host.lvm) ------------------------------------------------

def lv_bytes(processors: int, gb_per_processor: Optional[int], vg: VolumeGroup,
             total_processors: int, is_vac_lv, pool: Optional[str] = None) -> int:
    """An LM's LV size, rounded down to whole extents: fixed if gb_per_processor is set,
    else its processors' share: of the thin pool's size for a thin volume, of (VG size -
    non-Vac LVs) for a thick one."""
    if gb_per_processor is not None:
        size = gb_per_processor * processors * GB
    elif pool:
        size = processors * vg.pool_size(pool) // max(1, total_processors)
    else:
        others = sum(s for n, s in vg.volumes.items() if not is_vac_lv(n))
        size = processors * (vg.size - others) // max(1, total_processors)
    return size // vg.extent * vg.extent


def create_lv(settings: Settings, name: str, processors: int, gb: Optional[int]) -> str:
    """The device of a new LV for the VM `name` in volume_group (replacing a leftover of its
    name): thin if the group has a thin pool for Vac, else thick; sized by lv_bytes.

    Raises:
        BackendError: LVM could not read the group or make the volume.
    """
    try:
        vg = lvm.read_group(settings.volume_group or "")
        pool = lvm.thin_pool(vg)
        size = lv_bytes(processors, gb, vg, settings.total_processors,
                        vac_lv_pattern(settings.factory_name).fullmatch, pool)
        return lvm.create(vg, name, size, pool)
    except lvm.LvmError as e:
        raise _error(str(e), name) from e


def remove_lv(vg: str, name: str) -> None:
    """Remove vg/name; a missing LV counts as removed.

    Raises:
        BackendError: lvremove failed.
    """
    try:
        lvm.remove(vg, name)
    except lvm.LvmError as e:
        raise _error(str(e), name) from e


def vac_lv_pattern(factory_name: str) -> re.Pattern[str]:
    """Names of LVs of this factory's slots, <host>-NN.<domain> (use fullmatch): the names
    vac.machine.slots.ordinal_of takes for this factory's, the original's LV names too."""
    host, _, domain = factory_name.partition(".")
    return re.compile(rf"{re.escape(host)}-[0-9][0-9]+\.{re.escape(domain)}")
