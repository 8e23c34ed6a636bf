# SPDX-License-Identifier: BSD-2-Clause
"""The metrics endpoint of a real vacd running Docker machines, scraped by a real Prometheus
(Debian's prometheus, started here on a loopback port): the slot and creation series asked
from Prometheus's HTTP API, and `promtool check metrics` on the endpoint's text; the series an
alert needs: the build, the last cycle's time, the configuration's state (0 while a
broken edit is rejected, 1 again when fixed, the machines running throughout), every counter
at 0 from the start, and the backoff gauge with its old name."""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from docker_engine import IMAGE, engine_ready, sdk
from testbed import require_engine
from vacd_process import start_vacd, stop
from waiting import ENGINE_CALL, wait_until

import vac

pytestmark = [pytest.mark.docker]

METRICS_PORT = 19151
PROMETHEUS_PORT = 19152
CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = metrics.example.com
factory_name = {factory}
state_dir = {state}
host_processors = 3
total_processors = 2
overload_per_processor = 1000
mb_per_processor = 64
metrics_port = {port}

[machinetype sleeper]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
"""
PROMETHEUS = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: vacd
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def get(url: str, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def answers(url: str) -> bool:
    try:
        get(url, 1)
        return True
    except OSError:
        return False


def query(expr: str) -> list:
    url = f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query?" + urllib.parse.urlencode(
        {"query": expr})
    body = json.loads(get(url))
    assert body["status"] == "success", body
    return body["data"]["result"]


def values(expr: str) -> dict:
    return {tuple(sorted((k, v) for k, v in r["metric"].items()
                         if k not in ("job", "instance", "__name__"))): float(r["value"][1])
            for r in query(expr)}


@pytest.fixture
def vacd(tmp_path):
    engine_ready()
    require_engine("prometheus", shutil.which("prometheus") and shutil.which("promtool"),
                   "run scripts/ci/setup-accounting.sh")
    factory = f"pm{uuid.uuid4().hex[:8]}.example.com"
    (tmp_path / "user_data").write_text("#!/bin/sh\nexec sleep 300\n")
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(engine_call=ENGINE_CALL,
                                factory=factory, state=tmp_path / "state", port=METRICS_PORT,
                                image=IMAGE, user_data=tmp_path / "user_data"))
    log_path = str(tmp_path / "vacd.log")
    proc = start_vacd(str(conf), log_path)
    yield proc, log_path, conf
    stop(proc, signal.SIGTERM)
    api = sdk()
    for c in api.containers(all=True, filters={"label": f"vac.factory={factory}"}):
        api.remove_container(c["Id"], force=True)


@pytest.fixture
def prometheus(tmp_path):
    (tmp_path / "prometheus.yml").write_text(PROMETHEUS.format(port=METRICS_PORT))
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    log.close()
    try:
        assert wait_until(lambda: answers(f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready")), \
            (tmp_path / "prometheus.log").read_text()
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_prometheus_scrapes_slots_and_creations_of_a_vacd_with_docker_machines(
        vacd, prometheus, tmp_path):
    proc, log_path, _ = vacd
    endpoint = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    assert wait_until(lambda: answers(endpoint) and
                      'vac_slots{machinetype="sleeper",state="running"} 2.0' in get(endpoint),
                      ), open(log_path).read()
    text = get(endpoint)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert wait_until(lambda: values('vac_slots{state="running"}'))
    assert values("vac_slots") == {(("machinetype", "sleeper"), ("state", "running")): 2.0,
                                   (("state", "free"),): 1.0}
    assert values("vac_machine_creations_total") == {(("machinetype", "sleeper"),): 2.0}
    assert values("sum(vac_cycle_duration_seconds_count)")[()] >= 1
    assert values('up{job="vacd"}')[()] == 1.0
    assert proc.poll() is None


def test_prometheus_scrapes_what_an_alert_needs(vacd, prometheus):
    proc, log_path, conf = vacd
    started = time.time()
    assert wait_until(lambda: values('vac_slots{state="running"}') and
                      values("vac_config_ok") == {(): 1.0}), open(log_path).read()
    assert values("vac_build_info") == {(("version", vac.__version__),): 1.0}
    last = values("vac_last_cycle_timestamp_seconds")[()]
    assert started - 3600 < last < time.time() + 5     # vacd started just before `started`
    assert wait_until(lambda: values("vac_last_cycle_timestamp_seconds")[()] > last)
    # every counter there at 0 before anything happened, so rate() works from the start
    finishes = values('vac_machine_finishes_total{machinetype="sleeper"}')
    assert finishes == {(("code", c), ("machinetype", "sleeper")): 0.0
                        for c in ("100", "200", "300", "400", "500", "600", "700", "none")}
    assert values("vac_machine_fizzles_total") == {(("machinetype", "sleeper"),): 0.0}
    assert values("vac_backend_errors_total") == {(("backend", "docker"),): 0.0}
    assert values("vac_cycle_errors_total") == {(): 0.0}
    assert set(values("vac_apel_records_total")) == {
        (("outcome", o),) for o in ("archived", "queued", "rejected", "failed")}
    assert wait_until(lambda: values("rate(vac_machine_finishes_total[1m])"))
    assert values("vac_machinetype_backoff") == {(("machinetype", "sleeper"),): 0.0}
    assert values("vac_backoffs") == {(("machinetype", "sleeper"),): 0.0}    # the old name
    assert values("vac_machinetype_backoff_until_seconds") == {
        (("machinetype", "sleeper"),): 0.0}

    good = conf.read_text()
    conf.write_text(good.replace("machine_model = docker", "machine_model = dokcer"))
    proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: values("vac_config_ok") == {(): 0.0}), open(log_path).read()
    assert values('vac_slots{state="running"}') == {
        (("machinetype", "sleeper"), ("state", "running")): 2.0}
    conf.write_text(good)
    proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: values("vac_config_ok") == {(): 1.0}), open(log_path).read()
    assert proc.poll() is None
