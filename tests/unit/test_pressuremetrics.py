# SPDX-License-Identifier: BSD-2-Clause
"""vac.web.pressuremetrics: the host's pressure from the last record as Prometheus samples
(ratios, stall seconds, the pause per resource), and none but the pause gauge without PSI."""
from __future__ import annotations

import threading

from pressuresamples import PRESSURE
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vac import planfile
from vac.web.metrics import StateCollector
from vac.web.pressuremetrics import pressure_families

def _samples(record):
    found = {}
    for family in pressure_families(record):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_the_hosts_pressure_and_the_pause():
    reason = planfile.IdleReason(planfile.PRESSURE, "memory pressure: ...", resource="memory",
                                 value=31.5)
    record = planfile.PlanRecord(time=10.0, idle={"s1": reason}, pressure=PRESSURE)
    samples = _samples(record)
    ratio = (("line", "some"), ("resource", "memory"), ("window", "avg10"))
    assert samples[("vac_host_pressure_ratio", ratio)] == 0.315
    assert samples[("vac_host_pressure_stall_seconds_total",
                    (("line", "full"), ("resource", "memory")))] == 12.0
    assert ("vac_host_pressure_ratio", (("line", "some"), ("resource", "cpu"),
                                        ("window", "avg60"))) not in samples
    paused = {dict(k[1])["resource"]: v for k, v in samples.items()
              if k[0] == "vac_creation_paused_for_pressure"}
    assert paused == {"cpu": 0.0, "memory": 1.0, "io": 0.0}


def test_without_psi_only_the_pause_gauge_at_zero():
    for record in (None, planfile.PlanRecord(time=1.0)):
        samples = _samples(record)
        assert {k[0] for k in samples} == {"vac_creation_paused_for_pressure"}
        assert set(samples.values()) == {0.0}


def test_scraped_through_the_state_collector(tmp_path, make_config):
    config = make_config("""
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
""")
    config.settings.paths.ensure()
    planfile.write(config.settings.paths.plan, planfile.PlanRecord(time=10.0, pressure=PRESSURE))
    registry = CollectorRegistry()
    registry.register(StateCollector(lambda: config, {}, threading.Lock()))
    text = generate_latest(registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"vac_host_pressure_ratio", "vac_host_pressure_stall_seconds",
            "vac_creation_paused_for_pressure"} <= names
    assert 'vac_host_pressure_ratio{line="some",resource="memory",window="avg10"} 0.315' in text
