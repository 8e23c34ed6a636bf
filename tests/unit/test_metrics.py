# SPDX-License-Identifier: BSD-2-Clause
"""The metrics on the fake backend: what each series counts, Prometheus naming conventions,
every counter at 0 from the start, the build, the last cycle's time, the configuration's state
and the backoffs read from the plan record, and the endpoint served on loopback only when
configured, with one clear error when prometheus_client is not installed."""
from __future__ import annotations

import logging
import os
import socket
import sys
import time
import urllib.request

import pytest
from fakeclock import T0
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import vac
from vac import planfile
from vac.accounting import apel
from vac.web.feed import after_cycle
from vac.web.metrics import Metrics
from vac.web.metricsserver import MetricsEndpoint


def samples(metrics):
    text = generate_latest(metrics.registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, found


def test_series_count_creations_finishes_fizzles_cpu_and_records(world):
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
    # no fizzle: the series is there at 0 (counters are present from the start)
    assert s[("vac_machine_fizzles_total", (("machinetype", "alpha"),))] == 0
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


def test_an_abort_shows_as_a_backoff_and_a_fizzle(world):
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
    assert s[("vac_machinetype_backoff", (("machinetype", "alpha"),))] == 1
    assert s[("vac_backoffs", (("machinetype", "alpha"),))] == 1
    assert s[("vac_slots", (("machinetype", "alpha"), ("state", "shutdown")))] == 2


def test_a_failed_creation_is_a_slot_state_of_its_own(world):
    w = world()
    w.conf.write_text(w.conf.read_text().replace(
        "fake_run_seconds = 1000", "fake_run_seconds = 1000\nfake_create_error = no such image"))
    metrics = Metrics(w.load)
    after_cycle(metrics, w.load(), w.run(), 0.1)
    _, s = samples(metrics)
    assert s[("vac_slots", (("machinetype", "alpha"), ("state", "failed")))] >= 1
    assert ("vac_slots", (("machinetype", "alpha"), ("state", "unknown"))) not in s


def test_the_endpoint_is_off_unless_metrics_port_is_set(world):
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


def test_an_accounting_failure_counts_as_a_failed_record_not_a_backend_error(world):
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
    # present at 0 from the start, not counted
    assert s[("vac_backend_errors_total", (("backend", "fake"),))] == 0
    os.unlink(day)                                  # repaired: the next cycle settles them
    assert len(w.run(1).accounting.archived) == 2


# The series an alert needs ----------------------------------------------------------------


def record_plan(w, **kw):
    paths = w.load().settings.paths
    os.makedirs(os.path.dirname(paths.plan), exist_ok=True)
    planfile.write(paths.plan, planfile.PlanRecord(time=T0, **kw))


def test_build_info_names_the_version(world):
    _, s = samples(Metrics(world().load))
    assert s[("vac_build_info", (("version", vac.__version__),))] == 1


def test_every_counter_is_there_at_zero_before_anything_happened(world):
    text, s = samples(Metrics(world().load))
    for code in ("100", "200", "300", "400", "500", "600", "700", "none"):
        assert s[("vac_machine_finishes_total", (("code", code), ("machinetype", "alpha")))] == 0
    assert s[("vac_machine_creations_total", (("machinetype", "alpha"),))] == 0
    assert s[("vac_machine_fizzles_total", (("machinetype", "alpha"),))] == 0
    assert s[("vac_backend_errors_total", (("backend", "fake"),))] == 0
    for outcome in ("archived", "queued", "rejected", "failed"):
        assert s[("vac_apel_records_total", (("outcome", outcome),))] == 0
    assert s[("vac_cycle_errors_total", ())] == 0
    assert s[("vac_cycle_duration_seconds_count", ())] == 0
    assert s[("vac_machine_cpu_seconds_total", (("machinetype", "alpha"),))] == 0
    assert s[("vac_last_cycle_timestamp_seconds", ())] == 0


def test_a_machinetype_added_later_gets_its_counters_at_the_next_cycle(world):
    w = world()
    metrics = Metrics(w.load)
    w.conf.write_text(w.conf.read_text() + "\n[machinetype beta]\nmachine_model = fake\n"
                      "target_share = 1\n")
    after_cycle(metrics, w.load(), w.run(), 0.1)
    _, s = samples(metrics)
    assert s[("vac_machine_creations_total", (("machinetype", "beta"),))] >= 0
    assert s[("vac_machine_finishes_total", (("code", "300"), ("machinetype", "beta")))] == 0


def test_last_cycle_timestamp_is_when_the_cycle_ended(world):
    w = world()
    metrics = Metrics(w.load)
    after_cycle(metrics, w.load(), w.run(), 0.1, now=T0 + 5)
    assert samples(metrics)[1][("vac_last_cycle_timestamp_seconds", ())] == T0 + 5
    before = time.time()
    after_cycle(metrics, w.load(), w.run(1), 0.1)
    assert samples(metrics)[1][("vac_last_cycle_timestamp_seconds", ())] >= before


@pytest.mark.parametrize("state, expected", [("ok", 1.0), ("rejected", 0.0), ("missing", 0.0)])
def test_config_ok_follows_the_record(world, state, expected):
    w = world()
    record_plan(w, config_state=state,
                config_error=None if state == "ok" else "vac.conf:3: vac_space is not set")
    assert samples(Metrics(w.load))[1][("vac_config_ok", ())] == expected


def test_config_ok_is_0_without_a_record_or_a_configuration(world):
    w = world()
    assert samples(Metrics(w.load))[1][("vac_config_ok", ())] == 0
    assert samples(Metrics(lambda: None))[1][("vac_config_ok", ())] == 0


def test_the_backoff_gauge_reads_the_structured_reasons(world):
    w = world()
    until = T0 + 900
    backoff = planfile.IdleReason(planfile.BACKOFF, "backoff of alpha until then", "alpha",
                                  until)
    both = planfile.combined([planfile.IdleReason(planfile.NO_ROOM, "no room"), backoff])
    record_plan(w, idle={"f1-00.example.com": both})
    _, s = samples(Metrics(w.load))
    assert s[("vac_machinetype_backoff", (("machinetype", "alpha"),))] == 1
    assert s[("vac_machinetype_backoff_until_seconds", (("machinetype", "alpha"),))] == until
    assert s[("vac_backoffs", (("machinetype", "alpha"),))] == 1     # the old name, an alias


def test_no_backoff_from_a_sentence_or_an_ended_backoff(world):
    w = world()
    record_plan(w, idle={
        "f1-00.example.com": planfile.IdleReason(planfile.OTHER,
                                                 "backoff of alpha until 9999999999"),
        "f1-01.example.com": planfile.IdleReason(planfile.BACKOFF, "ended", "alpha", T0 - 1)})
    _, s = samples(Metrics(w.load))
    assert s[("vac_machinetype_backoff", (("machinetype", "alpha"),))] == 0
    assert s[("vac_machinetype_backoff_until_seconds", (("machinetype", "alpha"),))] == 0
    assert s[("vac_backoffs", (("machinetype", "alpha"),))] == 0


def with_metrics_port(w, port):
    w.conf.write_text(w.conf.read_text().replace("[settings]\n",
                                                 f"[settings]\nmetrics_port = {port}\n"))


def test_metrics_port_without_prometheus_client_is_one_clear_error(world, monkeypatch,
                                                                   caplog):
    """The same one line each cycle, no traceback (vacd's log shows a line that holds across
    cycles once: test_optional runs a real vacd without the module)."""
    w = world()
    with_metrics_port(w, 19154)
    endpoint = MetricsEndpoint(w.load)
    monkeypatch.setitem(sys.modules, "prometheus_client", None)   # as if not installed
    caplog.set_level(logging.INFO, logger="vac.web")
    try:
        for seconds in (0, 1, 1):
            endpoint.after_cycle(w.run(seconds), 0.1)
        errors = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert {r.getMessage() for r in errors} == {
            "metrics_port is set but the Python module prometheus_client is not installed: "
            "install python3-prometheus_client (EL9) or pip install prometheus-client; no "
            "metrics are served"}
        assert all(r.exc_info is None for r in errors)
        assert endpoint.server is None and endpoint.metrics is None
        monkeypatch.undo()                                            # installed now
        endpoint.after_cycle(w.run(1), 0.1)
        assert endpoint.bound == ("127.0.0.1", 19154)
        with urllib.request.urlopen("http://127.0.0.1:19154/metrics", timeout=5) as r:
            assert "vac_config_ok" in r.read().decode()
    finally:
        endpoint.close()


def test_a_port_that_cannot_be_bound_is_one_line_tried_each_cycle(world, caplog):
    w = world()
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    with_metrics_port(w, holder.getsockname()[1])
    endpoint = MetricsEndpoint(w.load)
    caplog.set_level(logging.INFO, logger="vac.web")
    try:
        for seconds in (0, 1, 1):
            endpoint.after_cycle(w.run(seconds), 0.1)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len({r.getMessage() for r in errors}) == 1, errors
        assert "cannot be bound" in errors[0].getMessage()
        assert all(r.exc_info is None for r in errors)
        assert endpoint.server is None
        holder.close()                                     # the port is free now
        endpoint.after_cycle(w.run(1), 0.1)
        assert endpoint.server is not None
    finally:
        endpoint.close()
        holder.close()
