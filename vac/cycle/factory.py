# SPDX-License-Identifier: BSD-2-Clause
"""One factory cycle: observe the slots, plan (pure), then act on the plan, and record it.

Before planning, every available backend prepares the host once (the libvirt NAT network); a
backend whose preparation fails is treated like an unavailable one: its machinetypes wait this
cycle. Then the `after_prepare` hook runs (vacd's metadata service,
vac.backends.libvirt.services), so servers stay out of the Factory.

A configuration that is rejected or missing never stops the cycle (vac.cycle.configstate):
the machines that run are managed with the last good configuration, or with what the state
directory says when there never was one, and nothing is created; factory-error says why
while it lasts and is removed when the file is good again. The factory always has a backend
pool once its first cycle has begun, whatever the configuration.

Every cycle and every refill ends with one record (vac.planfile.PlanRecord, plan.json): each
idle slot's reason as data, the configuration's state, the errors, each machine's error
count, the unmanaged slots, the notes, and the counts after the cycle's destroys (before its
creations), which is also what the `counts` file says, as the original wrote it.

A failed creation is finished at once (its machine shows Failed, its slot is idle with the
reason); the machinetype's remaining creations of that cycle wait for the next one, and the
log gets one line per machinetype for it.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from vac import planfile
from vac.accounting import percycle
from vac.backends import backend_for_model
from vac.config.model import Config, MachineType
from vac.cycle import housekeeping, planner
from vac.cycle import refill as refilling
from vac.cycle.backendpool import BackendPool
from vac.cycle.backofflog import BackoffLog
from vac.cycle.censuskeeper import CensusKeeper, SpaceCensus
from vac.cycle.configstate import ConfigKeeper, Loaded
from vac.cycle.creation import create_machine
from vac.cycle.finishing import Ending, finish_machine
from vac.cycle.fizzlehint import FizzleHints
from vac.cycle.hostdisk import HostDisk
from vac.cycle.hostmemory import HostMemory
from vac.cycle.hostpressure import HostPressure
from vac.cycle.machinepressure import MachinePressureRecorder
from vac.cycle.observe import Observation, find_zombies, observe
from vac.cycle.ownerload import OwnerLoad
from vac.cycle.parallel import run_grouped
from vac.cycle.record import Recorder
from vac.cycle.report import CycleReport, acted, log_failures, merge
from vac.errors import VacError
from vac.host import facts
from vac.machine import mjf, stamped
from vac.machine.directory import MachineDir
from vac.machine.slots import Slot, make_slots
from vac.paths import Paths
from vac.planfile import IdleReason

log = logging.getLogger(__name__)

SAME_SECOND = "previous machine ended within its first second"  # refilled a second later


@dataclass(frozen=True)
class _Last:
    """What a refill plans from: the last cycle's configuration, waiting backends, view."""

    loaded: Loaded
    waiting: Dict[str, str]
    seen: Observation


class Factory:
    """Runs cycles. Dependencies are arguments: config loader, backends, clock, load, rng.

    `state_dir` is where to look after running machines while no configuration was ever
    accepted (default: the pool's, else /var/lib/vac); `host` the host facts for that case."""

    def __init__(self, load_config: Callable[[], Config], pool: Optional[BackendPool] = None,
                 clock: Callable[[], float] = time.time,
                 loadavg: Callable[[], Tuple[float, float, float]] = facts.read_loadavg,
                 rng: Optional[random.Random] = None, fetcher: Optional[Callable] = None,
                 after_prepare: Optional[Callable[[Config], List[str]]] = None,
                 space_census: Optional[SpaceCensus] = None,
                 owner_load: Optional[OwnerLoad] = None, state_dir: Optional[str] = None,
                 host: Optional[facts.HostFacts] = None,
                 pressure: Optional[HostPressure] = None, disk: Optional[HostDisk] = None):
        self.load_config = load_config
        self.after_prepare = after_prepare
        self.census = CensusKeeper(space_census)
        self.pool = pool
        self.clock = clock
        self.loadavg = loadavg
        self.rng = rng or random.Random()
        self.fetcher = fetcher
        self.owner_load = owner_load or OwnerLoad()   # opportunistic mode's measurement
        self.pressure = pressure or HostPressure.beside(loadavg is facts.read_loadavg)
        self.machine_pressure = MachinePressureRecorder()   # each machine's own cgroup's
        self.memory = HostMemory.beside(loadavg is facts.read_loadavg,   # MemAvailable
                                        lambda: self.machine_pressure.usage)
        self.disk = disk or HostDisk.beside(loadavg is facts.read_loadavg)   # free space
        fallback = state_dir or (pool.settings.paths.state_dir if pool is not None
                                 else Paths().state_dir)
        self.keeper = ConfigKeeper(load_config, fallback, host)
        self.started = clock()
        self.recorder = Recorder()
        self.backoffs = BackoffLog()   # a line when a machinetype's backoff starts or ends
        self.fizzle_hints = FizzleHints()   # once per machine that found no work
        self._swept_once = False
        self._last: Optional[_Last] = None
        self._dirty: Set[str] = set()   # slots acted on since they were last observed

    @property
    def space_census(self) -> Optional[SpaceCensus]:
        """The hook that polls the other factories (vac.space.census.SpacePoll), if any."""
        return self.census.space_census

    @property
    def config(self) -> Optional[Config]:
        """The last configuration accepted (None until one is)."""
        return self.keeper.last_good

    def run_cycle(self) -> CycleReport:
        report = CycleReport()
        loaded = self._refresh_config(report)
        config = loaded.config
        paths = config.settings.paths
        paths.ensure()
        now = self.clock()
        stamped.write(paths.factory_heartbeat, str, stamped.now_for(self.clock))
        self.pool.start_cycle()
        slots = make_slots(config.settings.factory_name, config.settings.host_processors)
        if not loaded.own:   # from the state directory alone: only the slots it records
            slots = tuple(s for s in slots if os.path.lexists(paths.slot_record(s.name)))
        seen = observe(config, slots, self.pool)
        for name, problem in seen.errors.items():
            self._machine_failed(report, name, "observation", problem)
        self._adopt(seen, report)
        # Probes every configured machinetype's backend, so zombies are looked for there too.
        waiting = self._waiting(config, self._prepare_hosts(config))
        if self.after_prepare is not None and loaded.own:
            report.errors.extend(self.after_prepare(config))
        if loaded.own:   # from the state directory alone, nothing is taken for a zombie
            self._kill_zombies(config, seen, report)
        self._release_leftovers(config, report)
        census = self.census.census(config, seen.observed, now, fresh=loaded.own)
        yield_state, owner = self.owner_load.measure(config, seen, now)
        plan = self._plan(loaded, waiting, seen.observed, census, now, yield_state, owner)
        self.owner_load.keep(config, plan.yield_state)   # before a yield's destroy
        self._act(_Last(loaded, waiting, seen), plan, slots, now, report)
        self.machine_pressure.record(self.pool, [b.name for b in plan.heartbeats], seen, now)
        if loaded.own:   # machinetypes' machines_dir_days are not known otherwise
            housekeeping.expire(config, seen, now, functools.partial(self._guarded, report))
        housekeeping.sweep(config, seen, now, everything=not self._swept_once)
        self._swept_once = True
        self.recorder.write(loaded, seen, plan, report, now)
        if loaded.own:
            percycle.monitor_cycle(config, now)  # VacMon, version logger, GOCDB: never raises
        return report

    def refill(self, names: Iterable[str]) -> Optional[CycleReport]:
        """A machine ended (its backend's watcher said so): finish it and fill its slot now,
        without a full cycle. Only the named slots (and those acted on since they were last
        observed) are observed again; everything else is as the last cycle saw it, and only
        the named slots are acted on. The record is written again: the named slots' reasons
        and the refill's errors replace or join the last cycle's. None if no cycle has run."""
        if self._last is None:
            return None
        loaded, waiting, last = self._last.loaded, self._last.waiting, self._last.seen
        config = loaded.config
        names = set(names) & {o.slot.name for o in last.observed}
        if not names:
            return None
        report = CycleReport(config_error=loaded.error, config_state=loaded.state)
        now = self.clock()
        slots = tuple(o.slot for o in last.observed if o.slot.name in names | self._dirty)
        fresh = observe(config, slots, self.pool)
        for name, problem in fresh.errors.items():
            self._machine_failed(report, name, "observation", problem)
        seen = refilling.merge(last, fresh)
        census = self.census.census(config, seen.observed, now, fresh=False)
        plan = refilling.restrict(self._plan(
            loaded, waiting, refilling.hide_other_free_slots(seen.observed, names), census,
            now, self.owner_load.state), names)
        self._act(_Last(loaded, waiting, seen), plan, tuple(o.slot for o in seen.observed),
                  now, report)
        self.recorder.write(loaded, seen, plan, report, now, refilled=names)
        return report

    def _plan(self, loaded: Loaded, waiting: Dict[str, str], observed, census, now: float,
              yield_state, owner=None) -> planner.Plan:
        """The planner's decision (the same for a cycle and a refill)."""
        self.backoffs.update(loaded.config.machinetypes, census, now,
                             loaded.config.settings.factory_name)
        self.fizzle_hints.update(observed)   # the original's "minimum fizzle_seconds" hint
        return self.memory.kept(self.disk.kept(self.pressure.kept(planner.plan(
            loaded.config, observed, census, load=max(self.loadavg()), now=now,
            daemon_started=self.started, rng=self.rng, yield_state=yield_state, owner=owner,
            waiting=waiting, blocked=loaded.reason(), **self.pressure.inputs(now),
            **self.disk.inputs(loaded.config, self.pool),
            **self.memory.inputs(loaded.config)))))

    def _act(self, last: _Last, plan: planner.Plan, slots: Tuple[Slot, ...], now: float,
             report: CycleReport) -> None:
        """Apply the plan, keep what a refill starts from, and settle the accounting (not
        from the state directory alone: the records wait for a configuration to say the
        site and the machinetypes, and are written then)."""
        config = last.loaded.config
        self._apply(config, plan, last.seen, slots, now, report)
        self._last, self._dirty = last, acted(report)
        if last.loaded.own:
            self._settle(config, now, report)

    def _settle(self, config: Config, now: float, report: CycleReport) -> None:
        """APEL records of the machines finished (and VacMon); never stops the cycle."""
        try:
            report.accounting = percycle.settle_records(config, now)
            report.errors.extend(report.accounting.errors.values())
            report.machine_errors.update(report.accounting.errors)
        except Exception as e:  # noqa: BLE001 - accounting must not stop the cycle
            log.exception("accounting failed")
            report.errors.append(f"accounting failed: {type(e).__name__}: {e}")

    # The bulkhead: one machine's trouble stays with that machine -----------------------

    def _guarded(self, report: CycleReport, name: str, what: str, action: Callable,
                 *args) -> Any:
        """Run one machine's step; on any exception log it once with the machine's name,
        count it, and return None so the cycle goes on with every other slot."""
        try:
            return action(*args)
        except Exception as e:  # noqa: BLE001 - the bulkhead: nothing escapes one machine
            log.debug("%s: %s failed", name, what, exc_info=True)
            self._machine_failed(report, name, what, f"{type(e).__name__}: {e}")
            return None

    def _machine_failed(self, report: CycleReport, name: str, what: str, problem: str) -> None:
        text = f"{name}: {what} failed: {problem}"
        log.error("%s", text)
        report.errors.append(text)
        report.machine_errors[name] = text

    # Configuration ----------------------------------------------------------------------

    def _refresh_config(self, report: CycleReport) -> Loaded:
        """This cycle's configuration (vac.cycle.configstate), and the pool set up for it."""
        loaded = self.keeper.refresh()
        report.config_error, report.config_state = loaded.error, loaded.state
        if self.pool is None:
            self.pool = BackendPool(loaded.config.settings)
        else:
            self.pool.reconfigure(loaded.config.settings)
        return loaded

    # Observation helpers ----------------------------------------------------------------

    def _kill_zombies(self, config: Config, seen: Observation, report: CycleReport) -> None:
        for backend_name, name, reason in find_zombies(config, seen, self.pool):
            log.warning("%s: destroying zombie %s machine: %s", name, backend_name, reason)
            if self._guarded(report, name, "zombie destroy", _destroy_zombie,
                             self.pool.get(backend_name), name):
                report.zombies.append(name)
        for backend_name, probe in self.pool.probed().items():
            if probe.available:
                try:
                    killed = self.pool.get(backend_name).kill_strays()
                except Exception as e:  # noqa: BLE001 - a backend's bug must not stop the cycle
                    report.errors.append(f"{backend_name}: killing stray processes failed: {e}")
                    continue
                if killed:
                    log.warning("killed %d stray %s processes", killed, backend_name)

    def _release_leftovers(self, config: Config, report: CycleReport) -> None:
        """What this factory's finished or vanished machines still hold (a cgroup parent a
        killed vacd left): each available backend looks, by machine directory name."""
        settings = config.settings
        for name, probe in sorted(self.pool.probed().items()):
            if not probe.available:
                continue
            try:
                self.pool.get(name).release_leftovers(settings.paths.machines,
                                                      settings.factory_name)
            except Exception as e:  # noqa: BLE001 - a backend's bug must not stop the cycle
                report.errors.append(f"{name}: release of leftovers failed: {e}")

    def _prepare_hosts(self, config: Config) -> Dict[str, str]:
        """Probe every configured machinetype's backend, then prepare_host() each available
        backend once; return backend name -> why its preparation failed."""
        for mt in config.machinetypes.values():
            self.pool.available_for_model(mt.machine_model)
        failed: Dict[str, str] = {}
        for name, probe in sorted(self.pool.probed().items()):
            if not probe.available:
                continue
            try:
                self.pool.get(name).prepare_host()
            except VacError as e:
                failed[name] = f"host preparation failed: {e}"
                log.warning("backend %s unavailable this cycle: %s", name, failed[name])
        return failed

    def _waiting(self, config: Config, unprepared: Dict[str, str]) -> Dict[str, str]:
        """Machinetypes whose backend is unavailable this cycle, or could not prepare the
        host: they wait (no failed creation, no backoff). machinetype -> why."""
        waiting = {}
        for mt in config.machinetypes.values():
            probe = self.pool.available_for_model(mt.machine_model)
            backend = _backend_name(mt)
            reason = probe.reason if not probe.available else unprepared.get(backend)
            if not probe.available or reason:
                waiting[mt.name] = f"backend {backend} unavailable: {reason or 'no reason'}"
        return waiting

    # Acting on the plan -----------------------------------------------------------------

    def _apply(self, config: Config, plan: planner.Plan, seen: Observation,
               slots: Tuple[Slot, ...], now: float, report: CycleReport) -> None:
        for beat in plan.heartbeats:
            if beat.name in seen.directories and beat.name not in seen.unmanaged:
                directory = seen.directories[beat.name]
                self._guarded(report, beat.name, "heartbeat", directory.write_heartbeat,
                              beat.cpu_seconds, stamped.now_for(self.clock),   # when written
                              self.disk.scratch_bytes(os.path.basename(directory.path)))
        for lower in plan.lower_shutdown:
            if lower.name in seen.directories:
                self._guarded(report, lower.name, "lowering shutdown time",
                              mjf.lower_shutdown_time, seen.directories[lower.name],
                              lower.new_time)
        ends = [(f.name, None) for f in plan.finishes] + \
            [(d.name, Ending(d.message, d.reason)) for d in plan.destroys]
        for name, ending in ends:   # each: collect, record, destroy once (vac.cycle.finishing)
            self._guarded(report, name, "finishing", self._finish, config, seen, name, now,
                          report, ending)
        self._create_all(config, plan.creates, {s.name: s for s in slots}, report)

    def _finish(self, config: Config, seen: Observation, name: str, now: float,
                report: CycleReport, ending: Optional[Ending] = None) -> None:
        directory = seen.directories.get(name)
        if directory is None or name in seen.unmanaged or directory.finished is not None:
            return
        try:
            backend = self.pool.for_model(_model_of(seen, name))
        except VacError:
            backend = None
        done = finish_machine(config.settings.paths, directory,
                              config.machinetypes.get(directory.machinetype), backend, now,
                              ending, clock=self.clock)
        report.finished.append(name)
        if done.destroy_error is not None:
            self._machine_failed(report, name, "destroy", done.destroy_error)
        elif ending is not None:
            report.destroyed.append(name)

    def _create_all(self, config: Config, creates, by_name: Dict[str, Slot],
                    report: CycleReport) -> None:
        """Run the plan's creations, up to each backend's parallel_creations at once. Each
        creation reports into a report of its own, merged in plan order afterwards, so the
        outcome does not depend on which finished first. After a machinetype's first failed
        creation, its creations not begun yet are deferred to the next cycle."""
        own = {c.slot.name: CycleReport() for c in creates}
        failed: Dict[str, str] = {}   # machinetype -> its first failure's error
        lock = threading.Lock()

        def one(create) -> None:
            mine = own[create.slot.name]
            with lock:
                cause = failed.get(create.machinetype)
            if cause is not None:
                mine.reasons[create.slot.name] = IdleReason(
                    planfile.DEFERRED, f"creation of {create.machinetype} deferred: {cause}",
                    machinetype=create.machinetype)
                return
            self._guarded(mine, create.slot.name, "creation", self._create, config,
                          by_name[create.slot.name], create, mine)
            if create.slot.name in mine.failed:
                with lock:
                    failed.setdefault(create.machinetype, mine.failed[create.slot.name][1])

        run_grouped(creates, lambda c: self._parallel(config, c.machinetype), one)
        for create in creates:
            merge(report, own[create.slot.name])
        log_failures(creates, report)

    def _parallel(self, config: Config, machinetype: str) -> Tuple[str, int]:
        """(backend name, how many creations it takes at once) of a machinetype."""
        try:
            model = config.machinetypes[machinetype].machine_model
            return backend_for_model(model), max(1, self.pool.for_model(model)
                                                 .parallel_creations())
        except (KeyError, VacError):
            return "", 1

    def _create(self, config: Config, slot: Slot, action, report: CycleReport) -> None:
        machinetype = config.machinetypes[action.machinetype]
        paths = config.settings.paths
        now = self.clock()
        if os.path.lexists(paths.machine_dir(int(now), machinetype.name, slot.name)):
            # Directory names have one-second resolution: the slot's previous machine began
            # and ended within this second. Refill the slot next cycle, not over its record.
            report.reasons[slot.name] = IdleReason(planfile.SAME_SECOND, SAME_SECOND)
            return
        backend = None
        try:
            backend = self.pool.for_model(machinetype.machine_model)
            shutdown_time = action.shutdown_time
            if config.settings.shutdown_time is not None:
                shutdown_time = min(shutdown_time, config.settings.shutdown_time)
            created = create_machine(config.settings, machinetype, slot, action.processors,
                                     shutdown_time, backend, now, fetcher=self.fetcher,
                                     clock=self.clock)
        except VacError as e:
            self._creation_failed(config, machinetype, slot, str(e), backend, now, report)
            return
        log.info("%s created (%s, %d processors)", slot.name, machinetype.name,
                 action.processors)
        report.created.append(slot.name)
        report.machines[slot.name] = os.path.basename(created.directory.path)

    def _creation_failed(self, config: Config, machinetype: MachineType, slot: Slot,
                         error: str, backend, now: float, report: CycleReport) -> None:
        """Count the failure, and finish the machine now: it shows Failed, its slot is idle
        with the reason, and its 700 message backs the machinetype off as an abort."""
        message = f"{slot.name} ({machinetype.name}) creation fails with: {error}"
        report.errors.append(message)
        report.machine_errors[slot.name] = message
        report.failed[slot.name] = (machinetype.name, error)
        report.reasons[slot.name] = IdleReason(
            planfile.CREATION_FAILED, f"{machinetype.name}: creation failed: {error}",
            machinetype=machinetype.name)
        paths = config.settings.paths
        directory = MachineDir.for_slot(paths, slot.name)
        if directory is None or directory.finished is not None or \
                directory.created != int(now):
            return   # the creation failed before its directory was made
        report.machines[slot.name] = os.path.basename(directory.path)
        self._guarded(report, slot.name, "finishing the failed creation", finish_machine,
                      paths, directory, machinetype, backend, now)

    # Housekeeping ---------------------------------------------------------------------

    def _adopt(self, seen: Observation, report: CycleReport) -> None:
        """Machines whose creation vacd did not finish, but which their backend runs: write
        `started` (the creation time) and a first heartbeat, and plan them as running."""
        adopted = {}
        for name in seen.adopt:
            directory = seen.directories[name]
            if self._guarded(report, name, "adoption", _mark_started, directory):
                log.warning("%s: creation was cut short after the backend started it; "
                            "adopted", name)
                adopted[name] = float(directory.created)
        if adopted:
            seen.observed = [dataclasses.replace(o, started=adopted[o.slot.name])
                             if o.slot.name in adopted else o for o in seen.observed]


def _mark_started(directory) -> bool:
    # The creation time, though the original would read the adoption's (the ctime cannot be
    # set back): the machine started between the two; its fizzle_seconds count from creation.
    directory.write("started", str(directory.created), mtime=float(directory.created))
    if directory.heartbeat_time is None:
        directory.write_first_heartbeat()
    return True


def _destroy_zombie(backend, name: str) -> bool:
    backend.stop(name, None)    # libvirt: ACPI shutdown and its wait first, as the original
    backend.destroy(name, None)
    return True


def _model_of(seen: Observation, name: str) -> str:
    model = seen.models.get(name)
    if not model:
        raise VacError(f"{name}: no machine model recorded")
    return model


def _backend_name(mt: MachineType) -> str:
    try:
        return backend_for_model(mt.machine_model)
    except VacError:
        return mt.machine_model
