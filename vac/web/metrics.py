# SPDX-License-Identifier: BSD-2-Clause
"""The metrics vacd exposes, named by the Prometheus conventions (vac_ prefix, _total on
counters, seconds, an _info gauge for the build): what the state directory shows at scrape time,
and what vacd counted.

At scrape time, read from disk (never from a backend): slots by state and machinetype, the
configuration's state and the backoffs in force (the last cycle's record, vac.planfile), the
CPU seconds of running machines (their heartbeat files). Counted after each cycle by the daemon
(vac.web.feed): creations, finishes by shutdown code, fizzles, backend errors, accounting
records, cycle durations and the time of the last cycle. Every counter is there at 0 from the
start, with the label values it is known to take (each configured machinetype, the standard
shutdown codes, the configured backends, the record outcomes), so rate() works from the first
scrape. The responder's own query counters are read as they stand.

vac_backoffs is the old name of vac_machinetype_backoff, kept as an alias for one release.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, Dict, Iterable, Optional, Set

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vac import __version__, planfile
from vac.backends import BACKENDS, MODEL_BACKENDS
from vac.config.model import Config
from vac.machine.directory import MachineDir, read_slot_record
from vac.machine.slots import make_slots
from vac.web.pressuremetrics import machine_pressure_families, pressure_families
from vac.web.scratchmetrics import disk_families, scratch_families

CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# MachineState values as vac_slots labels; a failed creation is a state of its own.
STATES = {"Starting": "starting", "Running": "running", "Shut down": "shutdown",
          "Failed": "failed"}
# The standard shutdown codes (Machine/Job Features, Vac's 700s) and "none": no coded message.
CODES = ("100", "200", "300", "400", "500", "600", "700", "none")
RECORD_OUTCOMES = ("archived", "queued", "rejected", "failed")


class StateCollector:
    """The gauges and counters read at scrape time."""

    def __init__(self, get_config: Callable[[], Optional[Config]], finished_cpu: Dict[str, float],
                 lock: threading.Lock, responder: Any = None):
        self.get_config = get_config
        self.finished_cpu = finished_cpu
        self.lock = lock
        self.responder = responder

    def describe(self) -> Iterable:
        return []       # collected only at scrape time

    def collect(self) -> Iterable:
        config = self.get_config()
        record = planfile.read(config.settings.paths.plan) if config is not None else None
        info = GaugeMetricFamily("vac_build_info", "Always 1: the version of vacd running",
                                 labels=["version"])
        info.add_metric([__version__], 1.0)
        yield info
        ok = GaugeMetricFamily("vac_config_ok", "1 while vacd's configuration is accepted, 0 "
                               "while it is rejected or missing (or no cycle has recorded it)")
        ok.add_metric([], 1.0 if record is not None
                      and record.config_state == planfile.CONFIG_OK else 0.0)
        yield ok
        yield from self._slot_families(config)
        yield from self._backoff_families(config, record)
        yield from pressure_families(record)
        yield from machine_pressure_families(config)
        yield from scratch_families(config)
        yield from disk_families(record)
        if self.responder is not None:
            queries = CounterMetricFamily("vac_responder_queries", "VacQuery datagrams the "
                                          "responder answered or dropped", labels=["outcome"])
            queries.add_metric(["answered"], getattr(self.responder, "answered", 0))
            queries.add_metric(["dropped"], getattr(self.responder, "dropped", 0))
            yield queries

    def _slot_families(self, config: Optional[Config]) -> Iterable:
        slots = GaugeMetricFamily("vac_slots", "Slots of this factory by machine state and "
                                  "machinetype (free: no machine)", labels=["state", "machinetype"])
        cpu = CounterMetricFamily("vac_machine_cpu_seconds", "CPU seconds used by machines, "
                                  "finished since vacd started plus running",
                                  labels=["machinetype"])
        if config is not None:
            states, running_cpu = self._slots(config)
            for (state, mt), count in sorted(states.items()):
                slots.add_metric([state, mt], count)
            with self.lock:
                totals = dict(self.finished_cpu)
            for mt, seconds in running_cpu.items():
                totals[mt] = totals.get(mt, 0.0) + seconds
            for mt in sorted(set(totals) | set(config.machinetypes)):
                cpu.add_metric([mt], totals.get(mt, 0.0))
        yield slots
        yield cpu

    def _slots(self, config: Config):
        s = config.settings
        states: Dict[tuple, int] = {}
        running_cpu: Dict[str, float] = {}
        for slot in make_slots(s.factory_name, s.host_processors):
            record = read_slot_record(s.paths, slot.name)
            directory = MachineDir.for_record(s.paths, slot.name, record)
            if directory is None:
                key = ("free", "")
            else:
                key = (STATES.get(directory.disk_state().value, "unknown"), directory.machinetype)
                if key[0] == "running":
                    running_cpu[key[1]] = running_cpu.get(key[1], 0.0) + directory.cpu_seconds
            states[key] = states.get(key, 0) + 1
        return states, running_cpu

    @staticmethod
    def _backoff_families(config: Optional[Config],
                          record: Optional[planfile.PlanRecord]) -> Iterable:
        held = backoffs(record)
        gauge = GaugeMetricFamily("vac_machinetype_backoff", "1 while a backoff of the "
                                  "machinetype keeps it from being created (as of the last "
                                  "cycle's record), else 0", labels=["machinetype"])
        until = GaugeMetricFamily("vac_machinetype_backoff_until_seconds", "When the "
                                  "machinetype's backoff ends (Unix time; 0: none in force)",
                                  labels=["machinetype"])
        alias = GaugeMetricFamily("vac_backoffs", "Deprecated alias of vac_machinetype_backoff "
                                  "(removed in the next release)", labels=["machinetype"])
        for mt in sorted(config.machinetypes) if config is not None else ():
            gauge.add_metric([mt], 1.0 if mt in held else 0.0)
            alias.add_metric([mt], 1.0 if mt in held else 0.0)
            until.add_metric([mt], held.get(mt, 0.0))
        yield gauge
        yield until
        yield alias


def backoffs(record: Optional[planfile.PlanRecord]) -> Dict[str, float]:
    """machinetype -> the end of its backoff (0.0: not known), for each backoff in force at the
    record's time: the idle reasons of kind backoff, read as data."""
    held: Dict[str, float] = {}
    for reason in record.idle.values() if record is not None else ():
        for single in reason.each():
            if single.kind != planfile.BACKOFF or not single.machinetype:
                continue
            if single.until is None or single.until >= record.time:
                held[single.machinetype] = max(held.get(single.machinetype, 0.0),
                                               single.until or 0.0)
    return held


class Metrics:
    """vacd's registry: the counters the daemon feeds after each cycle, and the state read at
    scrape time."""

    def __init__(self, get_config: Callable[[], Optional[Config]], responder: Any = None):
        self.registry = CollectorRegistry(auto_describe=False)
        self.lock = threading.Lock()
        self.finished_cpu: Dict[str, float] = {}
        r = self.registry
        self.creations = Counter("vac_machine_creations_total", "Machines created",
                                 ["machinetype"], registry=r)
        self.finishes = Counter("vac_machine_finishes_total", "Machines finished, by the "
                                "shutdown message's code (none: no message)",
                                ["machinetype", "code"], registry=r)
        self.fizzles = Counter("vac_machine_fizzles_total", "Machines that ended before "
                               "fizzle_seconds", ["machinetype"], registry=r)
        self.backend_errors = Counter("vac_backend_errors_total", "Errors of one machine's "
                                      "step, by its backend", ["backend"], registry=r)
        self.cycle_errors = Counter("vac_cycle_errors_total", "Errors the cycles reported",
                                    registry=r)
        self.records = Counter("vac_apel_records_total", "APEL job records, by outcome",
                               ["outcome"], registry=r)
        self.cycle_seconds = Histogram("vac_cycle_duration_seconds", "Duration of one factory "
                                       "cycle", buckets=CYCLE_BUCKETS, registry=r)
        self.last_cycle = Gauge("vac_last_cycle_timestamp_seconds", "When vacd's last cycle "
                                "ended (Unix time; 0: none yet)", registry=r)
        self.registry.register(StateCollector(get_config, self.finished_cpu, self.lock,
                                              responder))
        for outcome in RECORD_OUTCOMES:
            self.records.labels(outcome)
        self.prime(get_config())

    def prime(self, config: Optional[Config]) -> None:
        """Make every labelled counter's known series exist (at 0 until counted)."""
        if config is None:
            return
        for mt in config.machinetypes:
            self.creations.labels(mt)
            self.fizzles.labels(mt)
            for code in CODES:
                self.finishes.labels(mt, code)
        for backend in configured_backends(config):
            self.backend_errors.labels(backend)


def configured_backends(config: Config) -> Set[str]:
    """The backends the configured machinetypes use."""
    return {MODEL_BACKENDS[mt.machine_model] for mt in config.machinetypes.values()
            if MODEL_BACKENDS.get(mt.machine_model) in BACKENDS}
