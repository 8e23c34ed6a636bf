# SPDX-License-Identifier: BSD-2-Clause
"""Machine/Job Features (MJF): the machinefeatures/ and jobfeatures/ keys of one machine.

Every key is one row of MJF_TABLE: (directory, key, value function, deprecated). The values are
a pure function of an MjfContext (settings, machinetype, processors, shutdown time, the
creation time `now`, job id); write_mjf() writes them all in one loop. Formatting follows
HSF-TN-2016-02 and its consumers: integers for every *_secs / *_bytes / count key (DIRAC parses
them with int()), floats only for hs06 / hs06_job, no trailing newline except allocated_cpu and
allocated_CPU, which the original always wrote with one.

jobfeatures/scratch_limit_bytes is written by vac.machine.scratch for a container machine
that got a bounded /scratch, and by the libvirt backend for a vm-raw VM's scratch disk. Deliberately not written, as in the original:
max_swap_bytes, grace_secs and grace_secs_job. grace_secs is a promise about how early a changed shutdowntime is announced;
Vac lowers shutdowntime as soon as a site sets an earlier global shutdown_time, so it cannot
promise any grace period. A site that can may add one with machinefeatures_option_grace_secs.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple

if TYPE_CHECKING:
    from vac.config.model import MachineType, Settings
    from vac.machine.directory import MachineDir

log = logging.getLogger(__name__)

MACHINEFEATURES = "machinefeatures"
JOBFEATURES = "jobfeatures"
DIRECTORIES = (MACHINEFEATURES, JOBFEATURES)
KEY_RE = re.compile(r"^[a-z0-9_]+$")
BYTES_PER_MIB = 1048576


@dataclass(frozen=True)
class MjfContext:
    """Everything MJF values depend on. `now` is the creation time (injected clock)."""

    settings: Settings
    machinetype: MachineType
    processors: int
    shutdown_time: int
    now: float
    job_id: Optional[str] = None

    @property
    def remaining_seconds(self) -> int:
        """Seconds from creation to shutdown time, never negative."""
        return max(0, int(self.shutdown_time) - int(self.now))

    @property
    def hs06(self) -> Optional[float]:
        per = self.settings.hs06_per_processor
        return None if per is None else per * self.processors

    @property
    def max_rss_bytes(self) -> int:
        return int(self.machinetype.mb_per_processor) * self.processors * BYTES_PER_MIB


@dataclass(frozen=True)
class MjfKey:
    """One MJF file: where it goes, how its value is computed, whether the key is deprecated."""

    directory: str
    key: str
    value: Callable[[MjfContext], Optional[str]]
    deprecated: bool = False

    @property
    def rel(self) -> str:
        return f"{self.directory}/{self.key}"


def float_text(x: float) -> str:
    """A float as Python 2's str() wrote it (12 significant digits, always with a point)."""
    return repr(float(f"{x:.12g}"))


def _hs06(ctx: MjfContext) -> Optional[str]:
    return None if ctx.hs06 is None else float_text(ctx.hs06)


def _processors(ctx: MjfContext) -> str:
    return str(int(ctx.processors))


def _processors_nl(ctx: MjfContext) -> str:
    return f"{int(ctx.processors)}\n"


def _shutdown(ctx: MjfContext) -> str:
    return str(int(ctx.shutdown_time))


def _cpu_limit(ctx: MjfContext) -> str:
    return str(ctx.remaining_seconds * int(ctx.processors))


def _wall_limit(ctx: MjfContext) -> str:
    return str(ctx.remaining_seconds)


def _jobstart(ctx: MjfContext) -> str:
    return str(int(ctx.now))


def _max_rss(ctx: MjfContext) -> str:
    return str(ctx.max_rss_bytes)


def _mem_limit_mb(ctx: MjfContext) -> str:
    # The old drafts' MB are 1000**2 bytes; integer division as the original did.
    return str(ctx.max_rss_bytes // 1000000)


def _job_id(ctx: MjfContext) -> Optional[str]:
    return ctx.job_id or None


def _const(text: str) -> Callable[[MjfContext], str]:
    return lambda ctx: text


MF, JF = MACHINEFEATURES, JOBFEATURES

MJF_TABLE: Tuple[MjfKey, ...] = (
    MjfKey(MF, "hs06", _hs06),
    MjfKey(MF, "total_cpu", _processors),
    MjfKey(MF, "phys_cores", _processors, deprecated=True),
    MjfKey(MF, "log_cores", _processors, deprecated=True),
    MjfKey(MF, "jobslots", _const("1"), deprecated=True),
    MjfKey(MF, "shutdowntime", _shutdown),
    MjfKey(JF, "shutdowntime_job", _shutdown),
    MjfKey(JF, "cpufactor_lrms", _const("1.0"), deprecated=True),
    MjfKey(JF, "cpu_limit_secs_lrms", _cpu_limit, deprecated=True),
    MjfKey(JF, "cpu_limit_secs", _cpu_limit),
    MjfKey(JF, "wall_limit_secs_lrms", _wall_limit, deprecated=True),
    MjfKey(JF, "wall_limit_secs", _wall_limit),
    MjfKey(JF, "jobstart_secs", _jobstart),
    MjfKey(JF, "hs06_job", _hs06),
    MjfKey(JF, "max_rss_bytes", _max_rss),
    MjfKey(JF, "mem_limit_MB", _mem_limit_mb, deprecated=True),
    MjfKey(JF, "allocated_cpu", _processors_nl),
    MjfKey(JF, "allocated_CPU", _processors_nl, deprecated=True),
    MjfKey(JF, "job_id", _job_id),
)

# The keys lower_shutdown_time() rewrites.
SHUTDOWN_KEYS = (f"{MF}/shutdowntime", f"{JF}/shutdowntime_job")


def mjf_values(ctx: MjfContext, include_deprecated: bool = True) -> Dict[str, Dict[str, str]]:
    """{"machinefeatures": {key: value}, "jobfeatures": {key: value}} for one machine (pure).

    Keys whose function returns None (hs06 without hs06_per_processor, job_id not yet known)
    are absent. Each `machinefeatures_option_KEY = value` of [settings] adds machinefeatures
    KEY; it cannot replace a key of the table, because Vac reads those back.
    """
    values: Dict[str, Dict[str, str]] = {d: {} for d in DIRECTORIES}
    for row in MJF_TABLE:
        if row.deprecated and not include_deprecated:
            continue
        value = row.value(ctx)
        if value is not None:
            values[row.directory][row.key] = value
    standard = {row.key for row in MJF_TABLE if row.directory == MF}
    for key, value in sorted(ctx.settings.machinefeatures_options.items()):
        if not KEY_RE.match(key):
            log.warning("machinefeatures_option_%s: key must use only a-z, 0-9 and _; ignored",
                        key)
        elif key in standard:
            log.warning("machinefeatures_option_%s: Vac writes machinefeatures/%s itself; "
                        "option ignored", key, key)
        else:
            values[MF][key] = str(value)
    return values


def write_mjf(directory: MachineDir, ctx: MjfContext) -> None:
    """Write every MJF key of the machine into its directory (atomic files, mode 0644)."""
    for sub, keys in mjf_values(ctx).items():
        os.makedirs(directory.file(sub), mode=0o755, exist_ok=True)
        for key, value in keys.items():
            directory.write(f"{sub}/{key}", value, mtime=ctx.now)
    log.debug("%s: wrote MJF (%d processors, shutdown time %d)", directory.name,
              ctx.processors, ctx.shutdown_time)


def lower_shutdown_time(directory: MachineDir, t: int) -> bool:
    """Lower machinefeatures/shutdowntime and jobfeatures/shutdowntime_job to `t`.

    Only those two files are touched, and each only if it is missing, unreadable or later than
    `t` (a shutdown time is never raised). Returns True if anything was rewritten.
    """
    changed = False
    for rel in SHUTDOWN_KEYS:
        current = _int_or_none(directory.read(rel, 256))
        if current is not None and current <= int(t):
            continue
        directory.write(rel, str(int(t)))
        changed = True
    if changed:
        log.info("%s: shutdown time lowered to %d", directory.name, int(t))
    return changed


def _int_or_none(text: Optional[str]) -> Optional[int]:
    if text is None:
        return None
    try:
        return int(float(text.strip()))
    except ValueError:
        return None
