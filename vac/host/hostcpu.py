# SPDX-License-Identifier: BSD-2-Clause
"""The host's CPU time from /proc/stat: busy seconds over all processors, and their count.

The first line of /proc/stat counts clock ticks since boot per kind of time (man 5 proc):

    cpu  user nice system idle iowait irq softirq steal guest guest_nice

Busy is user + nice + system + irq + softirq. Idle and iowait are not busy; steal is time a
hypervisor below this host gave to someone else, not time any process here ran; guest and
guest_nice are already inside user and nice (the kernel counts a VM's time in both), so adding
them would count VMs twice. The processors are the `cpuN` lines (the online ones).

This is everything that ran on the host, Vac's machines included: vac.cycle.ownerload
subtracts the machines' own CPU seconds to get the load from outside them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from vac import fsutil

STAT_LIMIT = 1024 * 1024
BUSY_FIELDS = (0, 1, 2, 5, 6)   # user nice system irq softirq, counted after the "cpu" word


@dataclass(frozen=True)
class HostCpu:
    """Busy CPU seconds since boot, summed over processors, and how many processors."""

    busy_seconds: float
    processors: int


def parse_stat(text: str, ticks_per_second: float) -> HostCpu:
    """/proc/stat text as HostCpu.

    Raises:
        ValueError: no aggregate `cpu` line with at least the seven counts of Linux 2.6.
    """
    busy = None
    processors = 0
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "cpu":
            counts = words[1:]
            if len(counts) < 7 or not all(c.isdigit() for c in counts):
                raise ValueError(f"unreadable cpu line in /proc/stat: {line[:80]!r}")
            busy = sum(int(counts[i]) for i in BUSY_FIELDS) / ticks_per_second
        elif words[0].startswith("cpu") and words[0][3:].isdigit():
            processors += 1
    if busy is None:
        raise ValueError("no cpu line in /proc/stat")
    return HostCpu(busy_seconds=busy, processors=max(1, processors))


def read(proc_root: str = "/proc") -> HostCpu:
    """This host's HostCpu now.

    Raises:
        OSError: /proc/stat cannot be read.
        ValueError: it does not say what parse_stat needs.
    """
    text = fsutil.read_optional(os.path.join(proc_root, "stat"), STAT_LIMIT)
    if text is None:
        raise OSError(f"cannot read {proc_root}/stat")
    return parse_stat(text, float(os.sysconf("SC_CLK_TCK")))
