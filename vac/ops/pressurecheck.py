# SPDX-License-Identifier: BSD-2-Clause
"""`vac doctor`'s pressure check: does this host keep pressure stall information (PSI), which
admission by pressure needs, and what do its figures say against the thresholds now.

    ok    PSI readable: each gated resource's avg10 beside its threshold
    warn  a threshold is set but the host has no PSI (creation falls back to the load average
          alone), a pressure file is unreadable, or a resource is above its threshold now
          (creation pauses while it stays there)
"""
from __future__ import annotations

from typing import List

from vac.config.model import Settings
from vac.config.options import PRESSURE_OPTIONS
from vac.host import pressure
from vac.host.pressure import NoPressure
from vac.ops.checks import OK, WARN, Check

NAME = "pressure"
NO_PSI_FIX = ("boot a kernel with PSI (Linux 4.20 or later, as EL9's) and without psi=0 on "
              "its command line (CONFIG_PSI_DEFAULT_DISABLED kernels need psi=1)")


def host_pressure(settings: Settings, proc_root: str = "/proc") -> List[Check]:
    """One line: the host's pressure against the pressure thresholds of the settings."""
    gated = [(o, r, w, getattr(settings, o)) for o, r, w in PRESSURE_OPTIONS
             if getattr(settings, o) is not None]
    try:
        stalls = pressure.read(pressure.host_files(proc_root))
    except NoPressure as e:
        if not gated:
            return [Check(NAME, OK, f"no pressure stall information ({e}); no pressure "
                                    "threshold is set")]
        return [Check(NAME, WARN, f"this host keeps no pressure stall information ({e}): "
                                  "creation is gated by the load average alone "
                                  "(overload_per_processor)", NO_PSI_FIX)]
    except ValueError as e:
        return [Check(NAME, WARN, f"cannot read the host's pressure: {e}",
                      "report this kernel's /proc/pressure format as a bug in Vac")]
    figures, over = [], []
    for option, resource, which, limit in gated:
        line = stalls[resource].line(which)
        if line is None:
            figures.append(f"{resource} {which}: no such line")
            continue
        figures.append(f"{resource} {which} avg10 {line.avg10:.2f}% (threshold {limit:g}%)")
        if line.avg10 > limit:
            over.append(f"{resource} {which} avg10 {line.avg10:.2f}% > {option} {limit:g}%")
    if not gated:
        return [Check(NAME, OK, "pressure stall information readable; no pressure threshold "
                                "is set")]
    if over:
        return [Check(NAME, WARN, "creation pauses now: " + "; ".join(over),
                      "find what stalls the host (top, iotop, vmstat), or raise the threshold")]
    return [Check(NAME, OK, ", ".join(figures))]
