# SPDX-License-Identifier: BSD-2-Clause
"""Each running machine's pressure, the cycle's side: after the heartbeats, every machine that
got one has its own cgroup's pressure read (vac.host.machinepressure) and recorded in its
directory (pressure.json), or the record removed where there is no reading (cgroup v1, PSI
off, a backend that cannot name the cgroup), so that no reader shows an old figure as today's.
The same cgroup's memory.current is read beside it (vac.host.memory) and kept in memory for
the next plan's admission by memory (vac.cycle.memorygate): `usage`, by machine name and
created time, holds only the machines read this time (one it cannot read has no entry: its
usage is unknown).

Reading costs three small files per machine. A machine's trouble stays its own: a failure is
logged and the next machine is read.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, Optional

from vac.cycle.backendpool import BackendPool
from vac.cycle.observe import Observation
from vac.host import memory
from vac.host.machinepressure import RECORD, MachinePressures, record_text
from vac.host.memory import MachineKey

log = logging.getLogger(__name__)


class MachinePressureRecorder:
    """record(pool, names, seen, now) once per full cycle, with the names of the machines that
    got a heartbeat (every running one): the gauges of the others are forgotten. Gauges are
    kept by machine directory, so a slot's next machine starts afresh."""

    def __init__(self, pressures: Optional[MachinePressures] = None):
        self.pressures = pressures if pressures is not None else MachinePressures()
        self.usage: Dict[MachineKey, int] = {}   # memory.current as this cycle read it

    def record(self, pool: BackendPool, names: Iterable[str], seen: Observation,
               now: float) -> None:
        names = [n for n in names if n in seen.directories and n not in seen.unmanaged]
        self.usage = {}
        for name in names:
            try:
                self._one(pool, name, seen, now)
            except Exception as e:  # noqa: BLE001 - the bulkhead: one machine's trouble
                log.warning("%s: cannot record its pressure: %s", name, e)
        self.pressures.keep_only(seen.directories[n].path for n in names)

    def _one(self, pool: BackendPool, name: str, seen: Observation, now: float) -> None:
        directory = seen.directories[name]
        model = seen.models.get(name)
        path = pool.for_model(model).cgroup_path(name, directory) if model else None
        reading = self.pressures.read(directory.path, path, now)
        used = memory.cgroup_usage(path, self.pressures.hierarchies) if path else None
        if used is not None:
            self.usage[(name, directory.created)] = used
        if reading is None or path is None:
            directory.remove(RECORD)
        else:
            directory.write(RECORD, record_text(reading, path), mtime=now)
