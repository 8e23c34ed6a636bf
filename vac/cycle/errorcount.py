# SPDX-License-Identifier: BSD-2-Clause
"""Per-machine error counts across cycles, for `vac slots --json` and the logs.

A machine's count grows by one each cycle in which some step of it failed (observation,
heartbeat, destroy, finishing, creation, expiry) and starts again at zero when its slot holds
another machine. The counts survive a restart of vacd: they are carried in the cycle summary
(plan.json) and read back from it by the first cycle.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

from vac import planfile

MAX_TEXT = 500   # characters kept of the last error


class MachineErrors:
    """slot name -> {"machine": directory name, "count": n, "last": text}."""

    def __init__(self) -> None:
        self.counts: Optional[Dict[str, Dict]] = None

    def update(self, plan_file: str, machines: Mapping[str, str],
               failed: Mapping[str, str]) -> Dict[str, Dict]:
        """Fold this cycle's failures in.

        Args:
            machines: slot name -> directory name of the machine it holds now.
            failed: slot name -> this cycle's error text for it.
        """
        if self.counts is None:
            self.counts = _previous(plan_file)
        kept: Dict[str, Dict] = {}
        for slot, machine in machines.items():
            entry = self.counts.get(slot)
            if entry is not None and entry.get("machine") == machine:
                kept[slot] = entry
        for slot, text in failed.items():
            machine = machines.get(slot, "")
            entry = kept.get(slot) or {"machine": machine, "count": 0, "last": ""}
            kept[slot] = {"machine": machine, "count": int(entry["count"]) + 1,
                          "last": text[:MAX_TEXT]}
        self.counts = kept
        return kept


def _previous(plan_file: str) -> Dict[str, Dict]:
    """The counts the last cycle wrote (through planfile.read), none if there is no record."""
    record = planfile.read(plan_file)
    if record is None:
        return {}
    return {slot: dict(entry) for slot, entry in record.machine_errors.items()}
