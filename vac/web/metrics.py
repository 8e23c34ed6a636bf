# SPDX-License-Identifier: BSD-2-Clause
"""The metrics vacd exposes, named by the Prometheus conventions (vac_ prefix, _total on
counters, seconds): what the state directory shows at scrape time, and what vacd counted.

At scrape time, read from disk (never from a backend): slots by state and machinetype, the
backoffs in force (the last cycle's plan.json), the CPU seconds of running machines (their
heartbeat files). Counted after each cycle by the daemon: creations, finishes by shutdown
code, fizzles, backend errors, accounting records, cycle durations. The responder's own query
counters are read as they stand.
"""
from __future__ import annotations

import json
import re
import threading
from typing import Any, Callable, Dict, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vac import fsutil
from vac.config.model import Config
from vac.machine.directory import MachineDir, read_slot_record
from vac.machine.slots import make_slots

CYCLE_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BACKOFF_RE = re.compile(r"backoff of ([a-z0-9-]+) until (\d+)")
STATES = {"Starting": "starting", "Running": "running", "Shut down": "shutdown"}


def _code(message: Optional[str]) -> str:
    word = (message or "").split()[:1]
    return word[0] if word and word[0].isdigit() and len(word[0]) == 3 else "none"


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
        slots = GaugeMetricFamily("vac_slots", "Slots of this factory by machine state and "
                                  "machinetype (free: no machine)", labels=["state", "machinetype"])
        cpu = CounterMetricFamily("vac_machine_cpu_seconds", "CPU seconds used by machines, "
                                  "finished since vacd started plus running",
                                  labels=["machinetype"])
        backoffs = GaugeMetricFamily("vac_backoffs", "1 while a backoff of the machinetype is in "
                                     "force (last cycle's plan)", labels=["machinetype"])
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
            held = self._backoffs(config)
            for mt in sorted(config.machinetypes):
                backoffs.add_metric([mt], 1.0 if mt in held else 0.0)
        yield slots
        yield cpu
        yield backoffs
        if self.responder is not None:
            queries = CounterMetricFamily("vac_responder_queries", "VacQuery datagrams the "
                                          "responder answered or dropped", labels=["outcome"])
            queries.add_metric(["answered"], getattr(self.responder, "answered", 0))
            queries.add_metric(["dropped"], getattr(self.responder, "dropped", 0))
            yield queries

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
    def _backoffs(config: Config) -> set:
        text = fsutil.read_optional(config.settings.paths.plan, 4 * 1024 * 1024) or "{}"
        try:
            plan = json.loads(text)
        except ValueError:
            return set()
        when = plan.get("time", 0) if isinstance(plan, dict) else 0
        idle = plan.get("idle", {}) if isinstance(plan, dict) else {}
        held = set()
        for reason in idle.values() if isinstance(idle, dict) else ():
            for mt, until in BACKOFF_RE.findall(str(reason)):
                if isinstance(when, (int, float)) and int(until) >= when:
                    held.add(mt)
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
        self.registry.register(StateCollector(get_config, self.finished_cpu, self.lock,
                                              responder))
