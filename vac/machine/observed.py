# SPDX-License-Identifier: BSD-2-Clause
"""What the factory observed of one slot (Observed): the planner's input, and what the census
counts (vac.space.censusdata), whether from the cycle's observation or from disk alone.

It lives in the machine wing, below the cycle and the space, which both read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from vac.machine.directory import MachineState
from vac.machine.slots import Slot


@dataclass(frozen=True)
class Observed:
    """One slot as the factory sees it this cycle (disk and backend combined).

    machinetype None means no slot record or machine directory: a free slot. State UNKNOWN
    (or ZOMBIE) means "leave it alone": its processors stay counted and nothing is planned.
    """

    slot: Slot
    machinetype: Optional[str] = None
    model: Optional[str] = None
    state: MachineState = MachineState.SHUTDOWN
    created: Optional[int] = None
    started: Optional[float] = None
    finished: bool = False
    processors: int = 1
    shutdown_time: Optional[int] = None
    cpu_seconds: float = 0.0
    heartbeat_file_mtime: Optional[float] = None
    shutdown_message: Optional[str] = None
    hs06: Optional[float] = None
    last_heartbeat: Optional[float] = None
    shutdown_message_time: Optional[float] = None   # when joboutputs/shutdown_message appeared

    @property
    def name(self) -> str:
        return self.slot.name
