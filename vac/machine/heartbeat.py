# SPDX-License-Identifier: BSD-2-Clause
"""The per-machine heartbeat file: "<CPU seconds> <CPU % since the last heartbeat>
[<scratch bytes in use>]", its mtime the time of the last heartbeat. Its one format:
MachineDir writes and reads it through here (write_heartbeat, heartbeat_values,
scratch_bytes), and every reader (responder, status page, VacMon, accounting, `vac slots`,
the metrics) goes through MachineDir.

CPU seconds are whole, as the original wrote them: its readers (a rolled-back vacd, its
responder) parse the first field with int(), so "12.3" would read as 0, and the second with
float(), ignoring what follows. The third field, the bytes in use in the machine's mounted
scratch (a VM's: allocated to its scratch disk file) as the cycle's disk reading found them,
is there only for a machine with a scratch measured;
when the CPU % is not known yet its place holds "-" (the original reads it as 0, as it reads
a missing one).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

NAME = "heartbeat"
READ_LIMIT = 256
FIRST = "0.0 0.0"     # written when a machine starts (created or adopted), as the original
UNKNOWN = "-"         # the CPU % not known yet, before the scratch bytes


def parse(text: Optional[str]) -> Tuple[Optional[float], Optional[float]]:
    """(CPU seconds, CPU %) from a heartbeat file's text; None for a field absent, not a
    number or not finite."""
    values = []
    for word in (text or "").split()[:2]:
        try:
            number: Optional[float] = float(word)
        except ValueError:
            number = None
        values.append(number if number is not None and math.isfinite(number) else None)
    values += [None] * (2 - len(values))
    return values[0], values[1]


def scratch_bytes(text: Optional[str]) -> Optional[int]:
    """The scratch bytes in use from a heartbeat file's text; None when it has none (or not
    a whole number of bytes)."""
    words = (text or "").split("\n", 1)[0].split()
    word = words[2] if len(words) > 2 else ""
    return int(word) if word.isdigit() and len(word) <= 20 else None


def line(cpu_seconds: float, previous_cpu: float, previous_time: Optional[float],
         now: float, scratch: Optional[int] = None) -> str:
    """The next heartbeat: whole CPU seconds, and the CPU % since the previous heartbeat
    when there was one and the CPU seconds did not go back; then the scratch bytes in use,
    when the machine has a scratch."""
    whole = int(max(cpu_seconds, 0.0))
    percent = None
    if previous_time is not None and now > previous_time and whole >= previous_cpu:
        percent = f"{100.0 * (whole - previous_cpu) / (now - previous_time):.1f}"
    has_scratch = scratch is not None and scratch >= 0
    fields = [str(whole)]
    if percent is not None or has_scratch:
        fields.append(percent or UNKNOWN)
    if has_scratch:
        fields.append(str(int(scratch)))
    return " ".join(fields) + "\n"
