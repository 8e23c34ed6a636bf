# SPDX-License-Identifier: BSD-2-Clause
"""LVM through its own commands (vgs, lvs, lvcreate, lvremove): the one place Vac runs them.

Every command is an argv list run with a timeout, never through a shell, by a runner with
subp.run's signature (`run(argv, timeout=..., check=...)`), which the tests inject. What LVM
prints is parsed field by field and anything unexpected is refused, not guessed at.

    group_exists(vg)        does LVM report this volume group (`vgs <vg>`)? Not its /dev/<vg>
                            directory: LVM makes that only while the group holds an active
                            volume, so an empty group would be taken for a missing one.
    read_group(vg)          its size, extent size and volumes (name, size, attributes, type).
    thin_pool(group)        the thin pool Vac uses in it, or why none (thin_pool_reason):
                            the pool named vac_thin_pool if there is one, else the group's only
                            thin pool. Vac never creates, extends or removes a pool: the admin
                            makes it (`lvcreate --type thin-pool -L <size> -n vac_thin_pool
                            <vg>`), and decides how it grows (lvm.conf's autoextend).
    create(group, name, size, pool)
                            a thin volume of virtual size `size` in the pool, or without a
                            pool a thick one of `size` bytes; returns /dev/<vg>/<name>.
    remove(vg, name)        lvremove; a volume that is not there counts as removed.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Dict, List, Optional, Tuple

from vac import subp
from vac.errors import ProcessError, VacError

log = logging.getLogger(__name__)

TIMEOUT = 120.0          # lvcreate/lvremove wait for udev; a busy host can take a while
VGS_TIMEOUT = 30.0
POOL_NAME = "vac_thin_pool"
THIN_POOL = "thin-pool"
MAPPER_CONTROL = "/dev/mapper/control"
# LVM's rule for VG and LV names; Vac's own volumes are named after its machines.
_NAME = re.compile(r"[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}")
LV_FIELDS = "lv_name,lv_size,lv_attr,segtype,pool_lv,data_percent"
_REPORT = ["--noheadings", "--units", "b", "--nosuffix", "--separator", "|"]

Runner = Callable[..., Any]


class LvmError(VacError):
    """An LVM command failed, or said something Vac does not understand."""


@dataclass(frozen=True)
class Volume:
    """One logical volume as lvs reports it: lv_attr's first character says its type ('t' a
    thin pool, 'V' a thin volume, '-' a plain one), segtype the same in words."""

    name: str
    size: int
    attr: str = "-wi-a-----"
    segtype: str = "linear"
    pool: str = ""
    data_percent: float = 0.0        # of a thin pool or thin volume: how full it is

    @property
    def is_thin_pool(self) -> bool:
        return self.segtype == THIN_POOL or self.attr[:1] == "t"

    @property
    def hidden(self) -> bool:
        """A pool's own data and metadata volumes ([pool_tdata]): never anyone's to remove."""
        return self.name.startswith("[")


@dataclass(frozen=True)
class VolumeGroup:
    """A volume group: size and extent size in bytes, and its volumes' sizes by name."""

    name: str
    size: int
    extent: int
    volumes: Dict[str, int]
    listed: Tuple[Volume, ...] = field(default=(), compare=False)

    def pools(self) -> List[str]:
        return sorted(v.name for v in self.listed if v.is_thin_pool)

    def pool_size(self, pool: str) -> int:
        return self.volumes.get(pool, 0)

    def pool_free(self, pool: str) -> int:
        """Bytes of the thin pool's data not yet given to its volumes."""
        for v in self.listed:
            if v.name == pool:
                return int(v.size * max(0.0, 100.0 - v.data_percent) / 100)
        return 0

    def given(self, pool: str) -> Dict[str, int]:
        """Bytes of the thin pool given to each of its thin volumes, by volume name."""
        return {v.name: int(v.size * v.data_percent / 100) for v in self.listed
                if v.pool == pool}

    def pool_room(self, pool: str, leave: Collection[str] = ()) -> int:
        """Bytes the thin volumes of the pool (but those named in `leave`) may still take
        from it: each one's size less what it has been given."""
        return sum(int(v.size * max(0.0, 100.0 - v.data_percent) / 100)
                   for v in self.listed if v.pool == pool and v.name not in leave)


def valid_name(name: str) -> bool:
    """A name LVM accepts for a volume group or volume (and not an option to its commands)."""
    return bool(_NAME.fullmatch(name)) and name not in (".", "..")


def _runner(run: Optional[Runner]) -> Runner:
    return run if run is not None else subp.run


def device_mapper() -> bool:
    """Does this kernel have device-mapper? Its control node opens (opening it as root loads
    dm-mod if that is a module); a node that is there without the driver says ENODEV."""
    try:
        fd = os.open(MAPPER_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def missing(which: Callable[[str], Optional[str]] = shutil.which,
            exists: Optional[Callable[[str], bool]] = None) -> str:
    """Why LVM volumes cannot be made on this host ('' when they can): its tools, or a kernel
    without device-mapper (exists(MAPPER_CONTROL) if given, else device_mapper())."""
    absent = [p for p in ("lvcreate", "lvremove", "lvs", "vgs") if not which(p)]
    if absent:
        return f"{' and '.join(absent)} not installed (lvm2)"
    if not (exists(MAPPER_CONTROL) if exists is not None else device_mapper()):
        return f"this kernel has no device-mapper ({MAPPER_CONTROL})"
    return ""


# Reading ---------------------------------------------------------------------------------

def group_exists(name: str, run: Optional[Runner] = None) -> bool:
    """True if LVM reports a volume group of this name (`vgs`). False without LVM's tools."""
    if not name or not valid_name(name) or (run is None and not shutil.which("vgs")):
        return False
    try:
        done = _runner(run)(["vgs", "--noheadings", "-o", "vg_name", name],
                            timeout=VGS_TIMEOUT, check=False)
    except ProcessError:
        return False
    return done.returncode == 0 and name in done.stdout.split()


def read_group(vg: str, run: Optional[Runner] = None) -> VolumeGroup:
    """Size, extent size and volumes of a volume group.

    Raises:
        LvmError: not a valid name, a command failed, or its output is not understood.
    """
    if not valid_name(vg):
        raise LvmError(f"{vg!r} is not a volume group name")
    try:
        out = _runner(run)(["vgs"] + _REPORT + ["-o", "vg_size,vg_extent_size", vg],
                           timeout=TIMEOUT).stdout
        size, extent = (_bytes(x) for x in _one_line(out, 2))
        out = _runner(run)(["lvs"] + _REPORT + ["-o", LV_FIELDS, vg], timeout=TIMEOUT).stdout
    except ProcessError as e:
        raise LvmError(f"cannot read volume group {vg}: {e}") from e
    if extent <= 0:
        raise LvmError(f"volume group {vg}: extent size {extent}")
    listed = tuple(_volumes(vg, out))
    return VolumeGroup(vg, size, extent, {v.name: v.size for v in listed}, listed)


def _one_line(out: str, count: int) -> List[str]:
    lines = [line for line in out.splitlines() if line.strip()]
    fields = lines[0].strip().split("|") if len(lines) == 1 else []
    if len(fields) != count:
        raise LvmError(f"unexpected vgs output {out[:200]!r}")
    return fields


def _bytes(text: str) -> int:
    try:
        value = int(float(text.strip().replace(",", ".")))   # a locale's decimal comma
    except ValueError:
        raise LvmError(f"not a size: {text[:40]!r}") from None
    if value < 0:
        raise LvmError(f"not a size: {text[:40]!r}")
    return value


def _volumes(vg: str, out: str) -> List[Volume]:
    found = []
    for line in out.splitlines():
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) != 6 or not fields[0]:
            raise LvmError(f"volume group {vg}: unexpected lvs line {line[:200]!r}")
        try:
            found.append(Volume(fields[0], _bytes(fields[1]), fields[2], fields[3], fields[4],
                                _percent(fields[5])))
        except LvmError as e:
            raise LvmError(f"volume group {vg}: volume {fields[0][:100]!r}: {e}") from None
    return found


def _percent(text: str) -> float:
    if not text:
        return 0.0
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise LvmError(f"not a percentage: {text[:40]!r}") from None
    if not 0.0 <= value <= 100.0:
        raise LvmError(f"not a percentage: {text[:40]!r}")
    return value


def thin_pool(group: VolumeGroup) -> Optional[str]:
    """The thin pool Vac makes thin volumes in, or None (thin_pool_reason says why)."""
    pools = group.pools()
    if POOL_NAME in pools:
        return POOL_NAME
    return pools[0] if len(pools) == 1 else None


def thin_pool_reason(group: VolumeGroup) -> str:
    """Why the group offers Vac no thin pool ('' when it does)."""
    pools = group.pools()
    if thin_pool(group) is not None:
        return ""
    if pools:
        return (f"volume group {group.name} has thin pools {', '.join(pools)} and none is "
                f"named {POOL_NAME}")
    return (f"volume group {group.name} has no thin pool (make one: lvcreate --type thin-pool "
            f"-L <size> -n {POOL_NAME} {group.name})")


def find_pool(vg: str, run: Optional[Runner] = None) -> Tuple[Optional[str], str]:
    """(the group's thin pool or None, why not) for a volume group by name; never raises."""
    try:
        group = read_group(vg, run)
    except LvmError as e:
        return None, str(e)
    pool = thin_pool(group)
    return pool, thin_pool_reason(group)


# Making and removing ---------------------------------------------------------------------

def device(vg: str, name: str) -> str:
    return f"/dev/{vg}/{name}"


def whole_extents(size: int, extent: int) -> int:
    """size rounded up to whole extents (at least one): a volume never smaller than asked."""
    return max(extent, -(-size // extent) * extent)


def create(group: VolumeGroup, name: str, size: int, pool: Optional[str] = None,
           run: Optional[Runner] = None) -> str:
    """Create the volume group/name (replacing a leftover of that name): thin in `pool` with
    the virtual size `size`, else thick of `size` bytes. Returns its device.

    Raises:
        LvmError: a name LVM refuses, no room, or lvcreate failed.
    """
    if not valid_name(name):
        raise LvmError(f"{name!r} is not a logical volume name")
    if size <= 0:
        raise LvmError(f"no room for a logical volume {name} in {group.name}")
    if name in group.volumes:
        remove(group.name, name, run)
    if pool:
        argv = ["lvcreate", "--yes", "--type", "thin", "--virtualsize", f"{size}b",
                "--name", name, f"{group.name}/{pool}"]
    else:
        argv = ["lvcreate", "--yes", "--wipesignatures", "y", "--name", name,
                "--size", f"{size}b", group.name]
    try:
        _runner(run)(argv, timeout=TIMEOUT)
    except ProcessError as e:
        raise LvmError(f"cannot create logical volume {group.name}/{name}: {e}") from e
    log.info("logical volume %s/%s created (%s%d bytes)", group.name, name,
             f"thin in {pool}, " if pool else "", size)
    return device(group.name, name)


def remove(vg: str, name: str, run: Optional[Runner] = None) -> bool:
    """Remove vg/name; False if there was no such volume.

    Raises:
        LvmError: lvremove failed (a volume still open: mounted, or a VM's disk).
    """
    if not valid_name(vg) or not valid_name(name):
        raise LvmError(f"{vg!r}/{name!r} is not a logical volume name")
    try:
        _runner(run)(["lvremove", "--yes", "--force", f"{vg}/{name}"], timeout=TIMEOUT)
    except ProcessError as e:
        if e.returncode is not None and ("not found" in (e.stderr or "")
                                         or "Failed to find" in (e.stderr or "")):
            return False
        raise LvmError(f"cannot remove logical volume {vg}/{name}: {e}") from e
    log.info("logical volume %s/%s removed", vg, name)
    return True
