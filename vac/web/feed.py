# SPDX-License-Identifier: BSD-2-Clause
"""What the daemon tells the metrics after each cycle: the cycle's report, counted."""
from __future__ import annotations

import time
from typing import Optional

from vac.backends import backend_for_model
from vac.config.model import Config
from vac.errors import VacError
from vac.machine.directory import MachineDir, read_slot_record
from vac.machine.outcome import code_label
from vac.web.metrics import Metrics
from vac.web.outcomes import fizzled_machine


def _backend_of(config: Config, slot: str) -> str:
    record = read_slot_record(config.settings.paths, slot)
    if record is None:
        return "unknown"
    try:
        return backend_for_model(record.model)
    except VacError:
        return "unknown"


def _finished(metrics: Metrics, config: Config, directory: MachineDir) -> None:
    mt = directory.machinetype
    metrics.finishes.labels(mt, code_label(directory.shutdown_message)).inc()
    machinetype = config.machinetypes.get(mt)
    if machinetype is not None and fizzled_machine(directory, machinetype.fizzle_seconds):
        metrics.fizzles.labels(mt).inc()
    with metrics.lock:
        metrics.finished_cpu[mt] = metrics.finished_cpu.get(mt, 0.0) + directory.cpu_seconds


def after_cycle(metrics: Metrics, config: Optional[Config], report, seconds: float,
                now: Optional[float] = None) -> None:
    """Count one cycle's report (a vac.cycle.factory.CycleReport) that ended at now."""
    metrics.prime(config)
    metrics.cycle_seconds.observe(seconds)
    metrics.last_cycle.set(time.time() if now is None else now)
    if report.errors:
        metrics.cycle_errors.inc(len(report.errors))
    if config is None:
        return
    for slot in report.created:
        record = read_slot_record(config.settings.paths, slot)
        metrics.creations.labels(record.machinetype if record else "unknown").inc()
    settled = getattr(report, "accounting", None)
    accounting_errors = settled.errors if settled is not None else {}
    for slot, text in getattr(report, "machine_errors", {}).items():
        if accounting_errors.get(slot) != text:      # the accounting's are counted below
            metrics.backend_errors.labels(_backend_of(config, slot)).inc()
    if settled is None:
        return
    for directory in settled.finished:
        _finished(metrics, config, directory)
    for outcome in ("archived", "queued", "rejected"):
        if getattr(settled, outcome):
            metrics.records.labels(outcome).inc(len(getattr(settled, outcome)))
    if settled.errors:
        metrics.records.labels("failed").inc(len(settled.errors))
