# SPDX-License-Identifier: BSD-2-Clause
"""Logging backoffs: one line when a machinetype's backoff starts, one when it ends.

A backoff (vac.cycle.shares.embargo_until: after an abort, no machine of the machinetype is
created for backoff_seconds) is otherwise only seen as an idle reason of a free slot. The
log says, per machinetype, the cause (which machine, on which factory, with which message)
and until when. It is fed the census each cycle and refill decide from; an abort that a
destroy of this very cycle causes is in the census, and so logged, from the next cycle on.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional

from vac.config.model import MachineType
from vac.cycle.shares import embargo_until
from vac.space.censusdata import Census

log = logging.getLogger(__name__)

TEXT_LIMIT = 200   # characters of a (perhaps remote) machine name or message in a log line


@dataclass(frozen=True)
class Backoff:
    """One machinetype's backoff: its end and the abort that caused it."""

    machinetype: str
    until: int
    abort_time: float
    factory: str
    machine: Optional[str] = None
    message: Optional[str] = None

    def started(self) -> str:
        cause = f"{_text(self.message) or 'an abort'} from {_text(self.machine) or 'a machine'}"
        return (f"backoff of {self.machinetype} starts: {cause} on {_text(self.factory)} at "
                f"{_when(self.abort_time)}; no {self.machinetype} machine is created here "
                f"until {_when(self.until)} ({self.until})")

    def ended(self) -> str:
        return (f"backoff of {self.machinetype} ends (it lasted until {_when(self.until)}, "
                f"after the abort of {_text(self.machine) or 'a machine'} on "
                f"{_text(self.factory)})")


def backoffs(machinetypes: Mapping[str, MachineType], census: Mapping[str, Census],
             now: float, factory: str) -> Dict[str, Backoff]:
    """The machinetypes (with a target share) in backoff now, by name (pure)."""
    found = {}
    for name, mt in sorted(machinetypes.items()):
        entry = census.get(name)
        if mt.target_share <= 0 or entry is None or entry.last_abort_time is None:
            continue
        until = embargo_until(mt, entry)
        if until is not None and now <= until:
            found[name] = Backoff(name, math.ceil(until), entry.last_abort_time,
                                  entry.last_abort_factory or factory,
                                  entry.last_abort_machine, entry.last_abort_message)
    return found


class BackoffLog:
    """Remembers the backoffs of the last census, and logs what started and what ended."""

    def __init__(self) -> None:
        self.active: Dict[str, Backoff] = {}

    def update(self, machinetypes: Mapping[str, MachineType], census: Mapping[str, Census],
               now: float, factory: str) -> List[str]:
        """Log the backoffs that start (a new abort) and end; return the lines logged."""
        current = backoffs(machinetypes, census, now, factory)
        lines = []
        for name, backoff in current.items():
            before = self.active.get(name)
            if before is None or before.abort_time != backoff.abort_time:
                lines.append(backoff.started())
        for name, backoff in self.active.items():
            if name not in current:
                lines.append(backoff.ended())
        self.active = current
        for line in lines:
            log.info("%s", line)
        return lines


def _when(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _text(value: Optional[str]) -> str:
    """A machine name or message (a guest's or another factory's) as bounded printable text."""
    if not value:
        return ""
    return "".join(c if c.isprintable() else "?" for c in value[:TEXT_LIMIT])
