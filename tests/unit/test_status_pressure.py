# SPDX-License-Identifier: BSD-2-Clause
"""The status page's host pressure: the last record's PSI per resource and line,
the thresholds that gate creation, the pause, and what a host without PSI shows."""
from __future__ import annotations

import dataclasses

from fakeclock import T0
from pressuresamples import PRESSURE

from vac import planfile
from vac.web import statuspages
from vac.web.status import factory_view


def _with_pressure(w, pressure, idle=None):
    config = w.load()
    path = config.settings.paths.plan
    record = planfile.read(path)
    planfile.write(path, dataclasses.replace(record, pressure=pressure, idle=idle or {}))
    return config


def test_the_hosts_pressure_with_its_thresholds_and_the_pause(world):
    w = world()
    w.run()
    reason = planfile.IdleReason(planfile.PRESSURE, "memory pressure 31.5 %",
                                 resource="memory", value=31.5)
    config = _with_pressure(w, PRESSURE, {"f1-01.example.com": reason})
    view = factory_view(config, now=T0)
    pressure = view["pressure"]
    assert pressure["available"] and pressure["paused"] == ["memory"]
    rows = {(r["resource"], r["line"]): r for r in pressure["rows"]}
    assert set(rows) == {("cpu", "some"), ("memory", "some"), ("memory", "full")}
    some = rows[("memory", "some")]
    assert (some["avg10"], some["threshold"], some["over"]) == (31.5, 20.0, True)
    assert rows[("memory", "full")]["threshold"] is None
    assert rows[("cpu", "some")]["threshold"] is None      # pressure_cpu_some is off
    html = statuspages.factory_page(view, 30)
    assert 'data-resource="memory" data-line="some" class="backoff"' in html
    assert "31.5%" in html and "creation paused for memory pressure" in html


def test_a_host_without_psi_says_the_load_average_gates_alone(world):
    w = world()
    w.run()
    view = factory_view(_with_pressure(w, None), now=T0)
    assert view["pressure"] == {"available": False, "time": None, "paused": [], "rows": []}
    assert "gated by the load average alone" in statuspages.factory_page(view, 30)


def test_the_status_page_and_metrics_listen_on_ipv6_and_dual_stack(world):
    """The status listener binds an IPv6 address, and "::" answers IPv4 too; the
    metrics listener (prometheus_client) binds by the address's family as well."""
    import socket
    import urllib.request

    from prometheus_client import CollectorRegistry, start_http_server

    from vac.web.statusserver import Views, start

    w = world()
    w.run()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for address, asked in (("::1", "[::1]"), ("::", "127.0.0.1"), ("::", "[::1]")):
        server = start(address, 0, Views(w.load))
        try:
            port = server.server_address[1]
            with opener.open(f"http://{asked}:{port}/api", timeout=10) as response:
                assert response.status == 200
        finally:
            server.shutdown()
            server.server_close()
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::1", 0))
        port = s.getsockname()[1]
    server, _ = start_http_server(port, "::1", registry=CollectorRegistry())
    try:
        with opener.open(f"http://[::1]:{port}/metrics", timeout=10) as response:
            assert response.status == 200
    finally:
        server.shutdown()
