# SPDX-License-Identifier: BSD-2-Clause
"""The host's pressure (PSI) as Prometheus metrics, from the last cycle's record (plan.json):

    vac_host_pressure_ratio{resource, line, window}   avg10/avg60/avg300 as a ratio (0 to 1)
    vac_host_pressure_stall_seconds_total{resource, line}   stall time since boot
    vac_creation_paused_for_pressure{resource}         1 while creation pauses for it, else 0

A host without PSI (no pressure in the record) has no host pressure samples, and the pause
gauge is 0 for every resource. Read at scrape time, like the rest of vac.web.metrics: the
figures are those the last cycle decided on.

Each running machine's own cgroup's pressure, from its record (vac.host.machinepressure):

    vac_machine_pressure_ratio{slot, machinetype, resource, line, window}
    vac_machine_pressure_stall_seconds_total{slot, machinetype, resource, line}

A machine without a reading (cgroup v1, PSI off) has no samples: absent, not 0.
"""
from __future__ import annotations

from typing import Iterable, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from vac import planfile
from vac.config.model import Config
from vac.host import machinepressure
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.slots import make_slots
from vac.web.statuspressure import paused_resources

RESOURCES = ("cpu", "memory", "io")
WINDOWS = ("avg10", "avg60", "avg300")


def pressure_families(record: Optional[planfile.PlanRecord]) -> Iterable:
    """The three families (the first two without samples when the host has no PSI)."""
    ratio = GaugeMetricFamily("vac_host_pressure_ratio", "Share of time the host's tasks "
                              "stalled for the resource (PSI some/full) over the window",
                              labels=["resource", "line", "window"])
    stalled = CounterMetricFamily("vac_host_pressure_stall_seconds", "Seconds the host's "
                                  "tasks stalled for the resource since boot (PSI total)",
                                  labels=["resource", "line"])
    host = record.pressure if record is not None and record.pressure else {}
    for resource in RESOURCES:
        for line, fields in sorted((host.get(resource) or {}).items()):
            for window in WINDOWS:
                if fields.get(window) is not None:
                    ratio.add_metric([resource, line, window], fields[window] / 100.0)
            if fields.get("total_seconds") is not None:
                stalled.add_metric([resource, line], fields["total_seconds"])
    paused = GaugeMetricFamily("vac_creation_paused_for_pressure", "1 while creation pauses "
                               "for the host's pressure on the resource, else 0",
                               labels=["resource"])
    held = paused_resources(record)
    for resource in RESOURCES:
        paused.add_metric([resource], 1.0 if resource in held else 0.0)
    return [ratio, stalled, paused]


def machine_pressure_families(config: Optional[Config]) -> Iterable:
    """The two per-machine families: a sample for each running machine with a record."""
    labels = ["slot", "machinetype", "resource", "line"]
    ratio = GaugeMetricFamily("vac_machine_pressure_ratio", "Share of time a machine's tasks "
                              "stalled for the resource (its own cgroup's PSI some/full) over "
                              "the window", labels=labels + ["window"])
    stalled = CounterMetricFamily("vac_machine_pressure_stall_seconds", "Seconds a machine's "
                                  "tasks stalled for the resource since its cgroup was made "
                                  "(its cgroup's PSI total)", labels=labels)
    for slot, machinetype, record in _machine_records(config):
        for resource in RESOURCES:
            for line, fields in sorted(record[resource].items()):
                for window in WINDOWS:
                    ratio.add_metric([slot, machinetype, resource, line, window],
                                     fields[window] / 100.0)
                if fields.get("total_seconds") is not None:
                    stalled.add_metric([slot, machinetype, resource, line],
                                       fields["total_seconds"])
    return [ratio, stalled]


def _machine_records(config: Optional[Config]):
    if config is None:
        return
    s = config.settings
    for slot in make_slots(s.factory_name, s.host_processors):
        directory = MachineDir.for_record(s.paths, slot.name, read_slot_record(s.paths, slot.name))
        if directory is None or directory.disk_state() is not MachineState.RUNNING:
            continue
        record = machinepressure.parse_record(
            directory.read(machinepressure.RECORD, machinepressure.RECORD_LIMIT))
        if record is not None:
            yield slot.name, directory.machinetype, record
