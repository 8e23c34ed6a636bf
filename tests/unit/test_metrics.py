# SPDX-License-Identifier: BSD-2-Clause
"""The metrics on the fake backend: what each series counts, Prometheus naming conventions,
backoffs read from the plan, and the endpoint served on loopback only when configured."""
from __future__ import annotations

import os
import urllib.request

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_accounting import T0, world  # noqa: F401 - the fixture

from vac.accounting import apel
from vac.web.feed import after_cycle
from vac.web.metrics import Metrics
from vac.web.server import MetricsEndpoint


def samples(metrics):
    text = generate_latest(metrics.registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, found


def test_series_count_creations_finishes_fizzles_cpu_and_records(world):  # noqa: F811
    w = world()
    config = {"c": None}
    metrics = Metrics(lambda: config["c"])
    for seconds in (0, 1500):
        report = w.run(seconds)
        config["c"] = w.load()
        after_cycle(metrics, config["c"], report, 0.2)
    text, s = samples(metrics)
    assert s[("vac_machine_creations_total", (("machinetype", "alpha"),))] == 4
    assert s[("vac_machine_finishes_total", (("code", "200"), ("machinetype", "alpha")))] == 2
    assert ("vac_machine_fizzles_total", (("machinetype", "alpha"),)) not in s
    assert s[("vac_slots", (("machinetype", "alpha"), ("state", "running")))] == 2
    # 2 finished machines of 500 CPU seconds each, 2 new ones at 0
    assert s[("vac_machine_cpu_seconds_total", (("machinetype", "alpha"),))] == 1000.0
    assert s[("vac_apel_records_total", (("outcome", "archived"),))] == 2
    assert s[("vac_apel_records_total", (("outcome", "queued"),))] == 2
    assert s[("vac_cycle_duration_seconds_count", ())] == 2
    assert s[("vac_backoffs", (("machinetype", "alpha"),))] == 0
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("vac_"), family.name
        if family.type == "counter":
            assert all(x.name.endswith(("_total", "_created")) for x in family.samples)


def test_an_abort_shows_as_a_backoff_and_a_fizzle(world):  # noqa: F811
    w = world()
    w.conf.write_text(w.conf.read_text().replace("fake_run_seconds = 1000",
                                                 "fake_run_seconds = 10")
                      .replace("fake_shutdown_message = 200 Success",
                               "fake_shutdown_message = 300 Nothing to do\nbackoff_seconds = 900"))
    metrics = Metrics(w.load)
    for seconds in (0, 50, 1):
        after_cycle(metrics, w.load(), w.run(seconds), 0.1)
    _, s = samples(metrics)
    assert s[("vac_machine_finishes_total", (("code", "300"), ("machinetype", "alpha")))] == 2
    assert s[("vac_machine_fizzles_total", (("machinetype", "alpha"),))] == 2
    assert s[("vac_backoffs", (("machinetype", "alpha"),))] == 1
    assert s[("vac_slots", (("machinetype", "alpha"), ("state", "shutdown")))] == 2


def test_the_endpoint_is_off_unless_metrics_port_is_set(world):  # noqa: F811
    w = world()
    endpoint = MetricsEndpoint(w.load)
    endpoint.after_cycle(w.run(), 0.1)
    assert endpoint.server is None and endpoint.metrics is None
    w.conf.write_text(w.conf.read_text().replace("[settings]\n",
                                                 "[settings]\nmetrics_port = 19153\n"))
    try:
        endpoint.after_cycle(w.run(1), 0.1)
        assert endpoint.bound == ("127.0.0.1", 19153)
        with urllib.request.urlopen("http://127.0.0.1:19153/metrics", timeout=5) as r:
            body = r.read().decode()
        assert 'vac_slots{machinetype="alpha",state="running"} 2.0' in body
    finally:
        endpoint.close()


def test_an_accounting_failure_counts_as_a_failed_record_not_a_backend_error(world):  # noqa: F811
    w = world()
    w.run()
    day = os.path.join(w.paths.apel_archive, apel.utc_day(T0 + 1500))
    with open(day, "w") as f:                       # the archive's day cannot be made
        f.write("")
    metrics = Metrics(w.load)
    report = w.run(1500)
    after_cycle(metrics, w.load(), report, 0.1)
    assert sorted(report.accounting.errors) == ["f1-00.example.com", "f1-01.example.com"]
    assert report.finished and all(n in report.machine_errors for n in report.finished)
    _, s = samples(metrics)
    assert s[("vac_apel_records_total", (("outcome", "failed"),))] == 2
    assert not any(name == "vac_backend_errors_total" for name, _ in s)
    os.unlink(day)                                  # repaired: the next cycle settles them
    assert len(w.run(1).accounting.archived) == 2
