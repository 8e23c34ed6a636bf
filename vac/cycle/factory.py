# SPDX-License-Identifier: BSD-2-Clause
"""One factory cycle: observe the slots, plan (pure), then act on the plan.

Before planning, every available backend prepares the host once (the libvirt NAT network); a
backend whose preparation fails is treated like an unavailable one: its machinetypes wait this
cycle. Then the `after_prepare` hook runs (vacd's metadata service,
vac.backends.libvirt.services), so servers stay out of the Factory.

A config error does not stop the factory from managing what runs: the last good config is
used for heartbeats, finishing and destroys, and nothing new is created.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

from vac import fsutil
from vac.accounting import percycle
from vac.accounting.records import Settled
from vac.backends import backend_for_model
from vac.config.model import Config, MachineType
from vac.cycle import housekeeping, planner, shares
from vac.cycle import refill as refilling
from vac.cycle.backendpool import BackendPool
from vac.cycle.creation import create_machine
from vac.cycle.errorcount import MachineErrors
from vac.cycle.finishing import finish_machine, last_outcome, write_heartbeat
from vac.cycle.observe import Observation, find_zombies, observe
from vac.cycle.ownerload import OwnerLoad
from vac.cycle.parallel import run_grouped
from vac.errors import ConfigError, VacError
from vac.faults import crash_point
from vac.host import facts as hostinfo
from vac.machine import mjf
from vac.machine.slots import Slot, make_slots

log = logging.getLogger(__name__)

NO_MACHINETYPES = "no machinetypes configured"  # the planner's idle reason
SAME_SECOND = "previous machine ended within its first second"  # refilled a second later


@dataclass
class CycleReport:
    """What one cycle did; returned for tests, logs and `vac slots`."""

    created: List[str] = field(default_factory=list)
    finished: List[str] = field(default_factory=list)
    destroyed: List[str] = field(default_factory=list)
    zombies: List[str] = field(default_factory=list)
    errors: List[str] = field(default_factory=list)
    idle: Dict[str, str] = field(default_factory=dict)
    config_error: Optional[str] = None
    machine_errors: Dict[str, str] = field(default_factory=dict)  # slot -> this cycle's error
    accounting: Optional[Settled] = None  # APEL records written this cycle


class Factory:
    """Runs cycles. Dependencies are arguments: config loader, backends, clock, load, rng."""

    def __init__(self, load_config: Callable[[], Config], pool: Optional[BackendPool] = None,
                 clock: Callable[[], float] = time.time,
                 loadavg: Callable[[], Tuple[float, float, float]] = hostinfo.read_loadavg,
                 rng: Optional[random.Random] = None, fetcher: Optional[Callable] = None,
                 after_prepare: Optional[Callable[[Config], List[str]]] = None,
                 space_census: Optional[Callable[..., Dict[str, shares.Census]]] = None,
                 owner_load: Optional[OwnerLoad] = None):
        self.load_config = load_config
        self.after_prepare = after_prepare
        self.space_census = space_census  # (config, local census, now) -> the space's
        self.pool = pool
        self.clock = clock
        self.loadavg = loadavg
        self.rng = rng or random.Random()
        self.fetcher = fetcher
        self.owner_load = owner_load or OwnerLoad()   # opportunistic mode's measurement
        self.config: Optional[Config] = None
        self.started = clock()
        self.errors = MachineErrors()
        self._swept_once = False
        self._remote: Dict[str, shares.Census] = {}   # the other factories' census
        self._last: Optional[Tuple[Config, Config, Observation]] = None
        self._dirty: Set[str] = set()   # slots acted on since they were last observed

    def run_cycle(self) -> CycleReport:
        report = CycleReport()
        config, creation_allowed = self._refresh_config(report)
        if config is None:
            return report
        paths = config.settings.paths
        paths.ensure()
        now = self.clock()
        fsutil.atomic_write(paths.factory_heartbeat, str(int(now)), mtime=now)
        self.pool.start_cycle()
        slots = make_slots(config.settings.factory_name, config.settings.host_processors)
        seen = observe(config, slots, self.pool)
        for name, problem in seen.errors.items():
            self._machine_failed(report, name, "observation", problem)
        self._adopt(seen, report)
        # Probes every configured machinetype's backend, so zombies are looked for there too.
        unprepared = self._prepare_hosts(config)
        if self.after_prepare is not None:
            report.errors.extend(self.after_prepare(config))
        creatable, waiting = self._creatable(config if creation_allowed
                                             else _no_creation(config), unprepared)
        self._kill_zombies(config, seen, report)
        self._release_leftovers(seen, report)
        census = self._census(config, seen, now)
        yield_state, owner = self.owner_load.measure(config, seen, now)
        plan = planner.plan(creatable, seen.observed, census, load=max(self.loadavg()),
                            now=now, daemon_started=self.started, rng=self.rng,
                            yield_state=yield_state, owner=owner)
        self.owner_load.keep(config, plan.yield_state)   # before a yield's destroy
        self._apply(config, plan, seen, slots, now, report)
        self._last, self._dirty = (config, creatable, seen), _acted(report)
        self._settle(config, now, report)
        guard = functools.partial(self._guarded, report)
        housekeeping.expire(config, seen, now, guard)
        housekeeping.sweep(config, seen, now, everything=not self._swept_once)
        self._swept_once = True
        self._write_summary(config, seen, plan, report, now, waiting)
        percycle.monitor_cycle(config, now)  # VacMon, version logger, GOCDB: never raises
        return report

    def refill(self, names: Iterable[str]) -> Optional[CycleReport]:
        """A machine ended (its backend's watcher said so): finish it and fill its slot now,
        without a full cycle. Only the named slots (and those acted on since they were last
        observed) are observed again; everything else is as the last cycle saw it, and only
        the named slots are acted on. None if no cycle has run yet."""
        if self._last is None:
            return None
        config, creatable, last = self._last
        names = set(names) & {o.slot.name for o in last.observed}
        if not names:
            return None
        report = CycleReport()
        now = self.clock()
        slots = tuple(o.slot for o in last.observed if o.slot.name in names | self._dirty)
        fresh = observe(config, slots, self.pool)
        for name, problem in fresh.errors.items():
            self._machine_failed(report, name, "observation", problem)
        seen = refilling.merge(last, fresh)
        census = self._census(config, seen, now, fresh=False)
        plan = planner.plan(creatable, refilling.hide_other_free_slots(seen.observed, names),
                            census, load=max(self.loadavg()), now=now,
                            daemon_started=self.started, rng=self.rng,
                            yield_state=self.owner_load.state)
        plan = refilling.restrict(plan, names)
        self._apply(config, plan, seen, tuple(o.slot for o in seen.observed), now, report)
        self._last, self._dirty = (config, creatable, seen), _acted(report)
        self._settle(config, now, report)
        return report

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

    def _refresh_config(self, report: CycleReport) -> Tuple[Optional[Config], bool]:
        try:
            config = self.load_config()
        except ConfigError as e:
            report.config_error = str(e)
            log.error("configuration rejected, no machines will be created: %s", e)
            return self.config, False
        for warning in config.warnings:
            log.warning("%s", warning)
        self.config = config
        if self.pool is None:
            self.pool = BackendPool(config.settings)
        else:
            self.pool.reconfigure(config.settings)
        return config, True

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

    def _release_leftovers(self, seen: Observation, report: CycleReport) -> None:
        """What finished machines still hold (a cgroup parent a killed destroy left)."""
        for name, directory in seen.directories.items():
            if directory.finished is None or name in seen.unmanaged:
                continue
            model = seen.models.get(name)
            if model and self.pool.available_for_model(model).available:
                self._guarded(report, name, "release of leftovers",
                              lambda d=directory, m=model: self.pool.for_model(m).release(d))

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

    def _creatable(self, config: Config,
                   unprepared: Optional[Dict[str, str]] = None) -> Tuple[Config, str]:
        """The config the planner creates from: machinetypes whose backend is unavailable this
        cycle, or could not prepare the host, wait (no failed creation, no backoff), and the
        text saying why."""
        held: Dict[str, List[str]] = {}   # "backend B unavailable: why" -> machinetypes
        unprepared = unprepared or {}
        for mt in config.machinetypes.values():
            probe = self.pool.available_for_model(mt.machine_model)
            backend = _backend_name(mt)
            reason = probe.reason if not probe.available else unprepared.get(backend)
            if not probe.available or reason:
                why = f"backend {backend} unavailable: {reason or 'no reason'}"
                held.setdefault(why, []).append(mt.name)
        if not held:
            return config, ""
        waiting = {name for names in held.values() for name in names}
        kept = {name: mt for name, mt in config.machinetypes.items() if name not in waiting}
        text = "; ".join(f"{why} ({', '.join(sorted(names))} waiting)"
                         for why, names in sorted(held.items()))
        return dataclasses.replace(config, machinetypes=kept), text

    def _census(self, config: Config, seen: Observation, now: float,
                fresh: bool = True) -> Dict[str, shares.Census]:
        """This factory's census with the other factories': polled anew if `fresh`, else
        (a refill) as the last cycle's poll found them."""
        outcomes = {}
        for name in config.machinetypes:
            try:
                outcome = last_outcome(config.settings.paths, name)
            except (OSError, VacError) as e:
                log.error("finishes/%s cannot be read: %s", name, e)
                outcome = None
            if outcome is not None:
                outcomes[name] = outcome
        local = shares.local_census(seen.observed, outcomes, config.machinetypes, now)
        if self.space_census is None or not fresh:
            return shares.add_census(local, self._remote)
        try:  # the other factories' census (vac.space.census.SpacePoll): bounded, never fatal
            self._remote = self.space_census(config, {}, now)
        except Exception:  # noqa: BLE001 - a poll must not stop the cycle
            log.exception("space census failed; deciding from this factory alone")
            self._remote = {}
        return shares.add_census(local, self._remote)

    # Acting on the plan -----------------------------------------------------------------

    def _apply(self, config: Config, plan: planner.Plan, seen: Observation,
               slots: Tuple[Slot, ...], now: float, report: CycleReport) -> None:
        for beat in plan.heartbeats:
            if beat.name in seen.directories and beat.name not in seen.unmanaged:
                self._guarded(report, beat.name, "heartbeat", write_heartbeat,
                              seen.directories[beat.name], beat.cpu_seconds, now)
        for lower in plan.lower_shutdown:
            if lower.name in seen.directories:
                self._guarded(report, lower.name, "lowering shutdown time",
                              mjf.lower_shutdown_time, seen.directories[lower.name],
                              lower.new_time)
        finishing = [f.name for f in plan.finishes]
        for destroy in plan.destroys:
            if self._guarded(report, destroy.name, "destroy", self._destroy, config, seen,
                             destroy, now, report) and destroy.name not in finishing:
                finishing.append(destroy.name)
        for name in finishing:
            self._guarded(report, name, "finishing", self._finish, config, seen, name, now,
                          report)
        self._create_all(config, plan.creates, {s.name: s for s in slots}, report)

    def _destroy(self, config: Config, seen: Observation, action, now: float,
                 report: CycleReport) -> bool:
        directory = seen.directories.get(action.name)
        if directory is None or action.name in seen.unmanaged:
            return False
        # The message first: a vacd killed after the backend's destroy must not leave a
        # machine that ended with no message (a guest that writes its own still wins).
        if action.message:
            directory.write_shutdown_message_if_none(action.message, when=now)
        crash_point("destroy:after-message")
        try:
            self.pool.for_model(_model_of(seen, action.name)).destroy(action.name, directory)
        except VacError as e:
            self._machine_failed(report, action.name, "destroy", str(e))
            return False
        crash_point("destroy:after-backend")
        log.info("%s destroyed: %s", action.name, action.reason)
        report.destroyed.append(action.name)
        return True

    def _finish(self, config: Config, seen: Observation, name: str, now: float,
                report: CycleReport) -> None:
        directory = seen.directories.get(name)
        if directory is None or name in seen.unmanaged or directory.finished is not None:
            return
        try:
            backend = self.pool.for_model(_model_of(seen, name))
        except VacError:
            backend = None
        finish_machine(config.settings.paths, directory,
                       config.machinetypes.get(directory.machinetype), backend, now)
        report.finished.append(name)

    def _create_all(self, config: Config, creates, by_name: Dict[str, Slot],
                    report: CycleReport) -> None:
        """Run the plan's creations, up to each backend's parallel_creations at once. Each
        creation reports into a report of its own, merged in plan order afterwards, so the
        outcome does not depend on which finished first."""
        own = {c.slot.name: CycleReport() for c in creates}

        def one(create) -> None:
            mine = own[create.slot.name]
            self._guarded(mine, create.slot.name, "creation", self._create, config,
                          by_name[create.slot.name], create, mine)

        run_grouped(creates, lambda c: self._parallel(config, c.machinetype), one)
        for create in creates:
            _merge(report, own[create.slot.name])

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
            report.idle[slot.name] = SAME_SECOND
            return
        try:
            backend = self.pool.for_model(machinetype.machine_model)
            shutdown_time = action.shutdown_time
            if config.settings.shutdown_time is not None:
                shutdown_time = min(shutdown_time, config.settings.shutdown_time)
            create_machine(config.settings, machinetype, slot, action.processors,
                           shutdown_time, backend, now, fetcher=self.fetcher)
        except VacError as e:
            message = f"{slot.name} ({machinetype.name}) creation fails with: {e}"
            log.error("%s", message)
            fsutil.atomic_write(paths.factory_error, message + "\n")
            report.errors.append(message)
            report.machine_errors[slot.name] = message
            return
        log.info("%s created (%s, %d processors)", slot.name, machinetype.name,
                 action.processors)
        report.created.append(slot.name)
        try:
            os.unlink(paths.factory_error)
        except FileNotFoundError:
            pass

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

    def _write_summary(self, config: Config, seen: Observation, plan, report: CycleReport,
                       now: float, waiting: str = "") -> None:
        paths = config.settings.paths
        running = [o for o in seen.observed if o.machinetype and not o.finished
                   and o.state.value == "Running"]
        procs = sum(o.processors for o in running)
        hs06 = sum(o.hs06 or float(o.processors) for o in running)
        fsutil.atomic_write(paths.counts, f"{len(running)} {len(seen.observed)} {procs} "
                                          f"{config.settings.total_processors} {hs06:.2f}")
        deferred = dict(report.idle)
        report.idle = {slot.name: reason for slot, reason in plan.idle}
        if report.config_error is None and not config.machinetypes:
            report.idle = {k: NO_MACHINETYPES for k in report.idle}
        elif waiting:
            report.idle = {k: waiting if r == NO_MACHINETYPES else f"{r}; {waiting}"
                           for k, r in report.idle.items()}
        report.idle.update(deferred)
        if report.config_error is not None:
            report.idle = {k: f"configuration rejected: {report.config_error}"
                           for k in report.idle}
        machines = {name: os.path.basename(d.path) for name, d in seen.directories.items()}
        counts = self.errors.update(paths.plan, machines, report.machine_errors)
        summary = {"time": int(now), "idle": report.idle, "unmanaged": seen.unmanaged,
                   "config_error": report.config_error, "errors": report.errors,
                   "cycle_errors": len(report.errors), "machine_errors": counts}
        fsutil.atomic_write(paths.plan, json.dumps(summary, sort_keys=True, indent=1,
                                                   allow_nan=False))


def _acted(report: CycleReport) -> Set[str]:
    """The slots a cycle or refill changed: their observation is stale from now on."""
    return set(report.created) | set(report.finished) | set(report.destroyed) | \
        set(report.zombies) | set(report.machine_errors)


def _merge(report: CycleReport, part: CycleReport) -> None:
    report.created += part.created
    report.errors += part.errors
    report.idle.update(part.idle)
    report.machine_errors.update(part.machine_errors)


def _mark_started(directory) -> bool:
    directory.write("started", str(directory.created), mtime=float(directory.created))
    if not directory.exists("heartbeat"):
        directory.write("heartbeat", "0.0 0.0")
    return True


def _destroy_zombie(backend, name: str) -> bool:
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


def _no_creation(config: Config) -> Config:
    """The same config with draining on: the planner then creates nothing."""
    return dataclasses.replace(config, settings=dataclasses.replace(config.settings,
                                                                    draining=True))
