# SPDX-License-Identifier: BSD-2-Clause
"""The original's "minimum fizzle_seconds" hint, logged once per machine.

A machine of this factory that finished saying it found no work (a 3xx message) ran for so
long, from `started` to its last heartbeat, before it gave up: a fizzle_seconds at least that
long would count such a machine as a fizzle. The original logged the hint with each slot's
line, every cycle; here it is logged once per finished machine, by the first cycle (or
refill) that sees it finished, in the original's words ("Minimum <machinetype>
fizzle_seconds=<seconds> ?") so that what a site admin greps for still matches. Its logger
is this module's, apart from the backoff lines (vac.cycle.backofflog).
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, List, Optional, Tuple

from vac.machine.observed import Observed

log = logging.getLogger(__name__)

TEXT_LIMIT = 200   # characters of a guest's message in a log line


def fizzle_hint(obs: Observed) -> Optional[str]:
    """The hint for a finished machine that found no work (a 3xx message), or None: how long
    it ran, from `started` to its last heartbeat."""
    message = obs.shutdown_message or ""
    if not obs.finished or not message.startswith("3") or obs.started is None \
            or obs.last_heartbeat is None or obs.machinetype is None:
        return None
    seconds = int(obs.last_heartbeat) - int(obs.started)
    shown = "".join(c if c.isprintable() else "?" for c in message[:TEXT_LIMIT])
    return (f"{obs.name} is {obs.state.value} ({obs.processors} {obs.machinetype} "
            f"\"{shown}\") Minimum {obs.machinetype} fizzle_seconds={seconds} ?")


class FizzleHints:
    """Remembers, per slot, the machine whose hint was logged last."""

    def __init__(self) -> None:
        self.hinted: Dict[str, Tuple[Optional[int], str]] = {}   # slot -> (created, message)

    def update(self, observed: Iterable[Observed]) -> List[str]:
        """Log the hint of each machine not hinted at before; return the lines logged."""
        lines = []
        for obs in observed:
            hint = fizzle_hint(obs)
            key = (obs.created, obs.shutdown_message or "")
            if hint is not None and self.hinted.get(obs.name) != key:
                self.hinted[obs.name] = key
                lines.append(hint)
                log.info("%s", hint)
        return lines
