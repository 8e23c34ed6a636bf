# SPDX-License-Identifier: BSD-2-Clause
"""The per-machine heartbeat file: "<CPU seconds> <CPU % since the last heartbeat>", its mtime
the time of the last heartbeat. Its one format: MachineDir writes and reads it through here
(write_heartbeat, heartbeat_values), and every reader (responder, status page, VacMon,
accounting) goes through MachineDir.

CPU seconds are whole, as the original wrote them: its readers (a rolled-back vacd, its
responder) parse the first field with int(), so "12.3" would read as 0.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

NAME = "heartbeat"
READ_LIMIT = 256
FIRST = "0.0 0.0"     # written when a machine starts (created or adopted), as the original


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


def line(cpu_seconds: float, previous_cpu: float, previous_time: Optional[float],
         now: float) -> str:
    """The next heartbeat: whole CPU seconds, and the CPU % since the previous heartbeat
    when there was one and the CPU seconds did not go back."""
    whole = int(max(cpu_seconds, 0.0))
    text = str(whole)
    if previous_time is not None and now > previous_time and whole >= previous_cpu:
        percent = 100.0 * (whole - previous_cpu) / (now - previous_time)
        text += f" {percent:.1f}"
    return text + "\n"
