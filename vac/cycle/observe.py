# SPDX-License-Identifier: BSD-2-Clause
"""Observing the factory: each slot's machine from its directory and its backend.

The result is plain data (vac.machine.observed.Observed) so the planner stays pure. A machine whose
backend is unavailable this cycle is reported with its disk state and marked `unmanaged`:
the factory neither finishes nor destroys what it cannot see.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from vac.backends.base import MachineStatus
from vac.config.model import Config
from vac.cycle.backendpool import BackendPool
from vac.errors import BackendError
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.observed import Observed
from vac.machine.slots import Slot

log = logging.getLogger(__name__)


@dataclass
class Observation:
    """One cycle's view: per-slot observations, their directories, what to leave alone, and
    the id each slot's backend gave for its machine."""

    observed: List[Observed] = field(default_factory=list)
    directories: Dict[str, MachineDir] = field(default_factory=dict)
    unmanaged: Dict[str, str] = field(default_factory=dict)
    backend_ids: Dict[str, str] = field(default_factory=dict)
    models: Dict[str, str] = field(default_factory=dict)           # slot -> machine_model
    adopt: Dict[str, MachineStatus] = field(default_factory=dict)  # creation cut short
    errors: Dict[str, str] = field(default_factory=dict)           # slot -> what failed

    def machine_cpu(self) -> Dict[str, float]:
        """CPU seconds of each slot's machine (running or ended), by its directory's path."""
        seen = {o.slot.name: o for o in self.observed}
        return {d.path: seen[name].cpu_seconds for name, d in self.directories.items()
                if name in seen}

    def unmeasured(self) -> List[str]:
        """Slots whose machine's CPU seconds are not known this cycle (backend not asked)."""
        return sorted(self.unmanaged)


def observe(config: Config, slots: Sequence[Slot], pool: BackendPool) -> Observation:
    """Read every slot's directory and ask the backends about unfinished machines."""
    result = Observation()
    for slot in slots:
        try:
            _observe_slot(config, slot, pool, result)
        except Exception as e:  # noqa: BLE001 - the bulkhead: one slot's trouble stays there
            log.debug("%s: observation failed", slot.name, exc_info=True)
            _unobservable(config, slot, f"{type(e).__name__}: {e}", result)
    return result


def _observe_slot(config: Config, slot: Slot, pool: BackendPool, result: Observation) -> None:
    paths = config.settings.paths
    record = read_slot_record(paths, slot.name)
    directory = MachineDir.for_record(paths, slot.name, record)
    if record is None or directory is None:
        result.observed.append(_free(slot))
        return
    result.directories[slot.name] = directory
    result.models[slot.name] = record.model
    state = directory.disk_state()
    status = None
    if state not in (MachineState.SHUTDOWN, MachineState.FAILED):
        status, why = _backend_status(pool, record.model, directory)
        if why:
            result.unmanaged[slot.name] = why
            state = MachineState.UNKNOWN  # the planner leaves unknown machines alone
        elif status is not None and state == MachineState.RUNNING:
            state = status.state
        elif status is not None and state == MachineState.STARTING and \
                status.state == MachineState.RUNNING:
            # vacd was stopped after the backend started the machine, before `started`
            # was written: the machine runs, so adopt it rather than destroy a payload.
            result.adopt[slot.name] = status
            state = MachineState.RUNNING
        if status is not None and status.backend_id:
            result.backend_ids[slot.name] = status.backend_id
    result.observed.append(_machine(config, slot, record.model, directory, state, status))


def _unobservable(config: Config, slot: Slot, problem: str, result: Observation) -> None:
    """A slot whose machine could not be observed: left alone (UNKNOWN keeps its processors
    counted and nothing planned), never taken for a free slot."""
    result.errors[slot.name] = problem
    result.unmanaged[slot.name] = f"cannot be observed: {problem}"
    result.observed = [o for o in result.observed if o.slot.name != slot.name]
    result.observed.append(Observed(slot=slot, machinetype="?", state=MachineState.UNKNOWN,
                                    processors=1))


def _backend_status(pool: BackendPool, model: str,
                    directory: MachineDir) -> Tuple[Optional[MachineStatus], str]:
    probe = pool.available_for_model(model)
    if not probe.available:
        return None, probe.reason
    try:
        return pool.for_model(model).status(directory.name, directory), ""
    except BackendError as e:
        return None, str(e)


def _free(slot: Slot) -> Observed:
    return Observed(slot=slot, machinetype=None, model=None, state=MachineState.SHUTDOWN,
                    created=None, started=None, finished=True, processors=0,
                    shutdown_time=None, cpu_seconds=0.0, heartbeat_file_mtime=None,
                    shutdown_message=None, hs06=None, last_heartbeat=None)


def _machine(config: Config, slot: Slot, model: str, directory: MachineDir,
             state: MachineState, status: Optional[MachineStatus]) -> Observed:
    machinetype = config.machinetypes.get(directory.machinetype)
    heartbeat_file_mtime = None
    if machinetype is not None and machinetype.heartbeat_file:
        heartbeat_file_mtime = directory.mtime(
            os.path.join("joboutputs", machinetype.heartbeat_file))
    cpu = status.cpu_seconds if status is not None else directory.cpu_seconds
    finished = directory.finished is not None
    written = directory.shutdown_message_time
    return Observed(slot=slot, machinetype=directory.machinetype, model=model, state=state,
                    created=directory.created, started=directory.started, finished=finished,
                    processors=directory.processors, shutdown_time=directory.shutdown_time,
                    cpu_seconds=max(cpu, directory.cpu_seconds),
                    heartbeat_file_mtime=heartbeat_file_mtime,
                    shutdown_message=directory.shutdown_message if finished or
                    state == MachineState.SHUTDOWN or written is not None else None,
                    hs06=directory.hs06, last_heartbeat=directory.heartbeat_time,
                    shutdown_message_time=written)


def find_zombies(config: Config, observation: Observation,
                 pool: BackendPool) -> List[Tuple[str, str, str]]:
    """(backend, machine name, reason) for machines a backend holds that no live slot owns.

    A machine is ours to keep only if its slot's directory is unfinished, of a model this
    backend serves, and its id matches the slot's job_id or the id the backend recorded for
    the slot's machine (a container id: job_id stays the UUID the machine was given).
    """
    live = {o.slot.name: o for o in observation.observed
            if o.machinetype is not None and not o.finished}
    zombies = []
    for name, probe in pool.probed().items():
        if not probe.available:
            continue
        backend = pool.get(name)
        try:
            listed = backend.list_machines()
        except BackendError as e:
            log.warning("cannot list %s machines: %s", name, e)
            continue
        for status in listed:
            if status.name in observation.unmanaged:
                continue  # its slot's machine could not be observed: leave it alone
            reason = _zombie_reason(status, live.get(status.name), backend.MODELS,
                                    observation.directories.get(status.name),
                                    observation.backend_ids.get(status.name, ""))
            if reason:
                zombies.append((name, status.name, reason))
    return zombies


def _zombie_reason(status: MachineStatus, owner: Optional[Observed], models,
                   directory: Optional[MachineDir], known_id: str) -> str:
    if owner is None or directory is None:
        return "no live machine directory owns it"
    if owner.model not in models:
        return f"its slot now holds a {owner.model} machine"
    ids = [i for i in (directory.job_id, known_id) if i]
    if ids and status.backend_id and not any(_same_id(i, status.backend_id) for i in ids):
        return f"its id {status.backend_id} is not the slot's machine's ({' or '.join(ids)})"
    return ""


def _same_id(a: str, b: str) -> bool:
    a, b = a.lower(), b.lower()
    return a == b or a.startswith(b) or b.startswith(a)
