# SPDX-License-Identifier: BSD-2-Clause
"""The status page on the fake backend: the data model (one cell per slot, idle reasons and
backoffs, superslots, shares, outcomes, the space's rows), the rendering (hostile guest and
pipe strings escaped, StrictUndefined, bounded files, symlinks not followed) and the HTTP side
(routes, JSON API, 404 for names that are not ours, GET/HEAD only, bounded requests, the
listener shared with /metrics)."""
from __future__ import annotations

import http.client
import json
import os
import urllib.request

import jinja2
import pytest
from fakeclock import T0

from vac.web import machinefiles, statuspages
from vac.web.metricsserver import MetricsEndpoint
from vac.web.spaceview import space_view
from vac.web.status import SpaceView, factory_view, superslot_groups
from vac.web.statusserver import StatusEndpoint

SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
PORT = 18501


def slots_of(view):
    return {c["slot"]: c for c in view["slots"]}


def first_machine(w):
    return machinefiles.directory_of_slot(w.load(), "f1-00.example.com")


def assert_escaped(html):
    assert SCRIPT not in html and "<img" not in html and "onerror=alert(1)>" not in html
    assert "<script" not in html


def test_one_cell_per_slot_with_running_machines_their_age_and_processors(world):
    w = world()
    w.run()
    view = factory_view(w.load(), now=T0 + 30)
    assert [c["slot"] for c in view["slots"]] == ["f1-00.example.com", "f1-01.example.com"]
    for cell in view["slots"]:
        assert cell["state"] == "running" and cell["machinetype"] == "alpha"
        assert cell["processors"] == 1 and cell["age_seconds"] == 30 and cell["marker"] == "A"
    assert view["counts"] == {"running": 2, "starting": 0, "idle": 0, "backoff": 0,
                              "failed": 0}
    assert view["health"]["level"] == "ok"
    panel = view["machinetypes"][0]
    assert panel["running"] == 2 and panel["target_share"] == 1.0
    assert panel["factory_share"] == 1.0 and panel["space_share"] == 1.0   # a space of one


def test_an_abort_shows_idle_slots_in_backoff_with_the_end_time_and_the_outcomes(world):  # noqa: E501
    w = world()
    w.conf.write_text(w.conf.read_text().replace("fake_run_seconds = 1000",
                                                 "fake_run_seconds = 10")
                      .replace("fake_shutdown_message = 200 Success",
                               "fake_shutdown_message = 300 Nothing to do\nbackoff_seconds = 900"))
    for seconds in (0, 50, 1):
        w.run(seconds)
    now = w.clock.now
    view = factory_view(w.load(), now=now)
    for cell in view["slots"]:
        assert cell["state"] == "backoff", cell
        assert "backoff of alpha until" in cell["reason"]
        assert cell["backoff_until"] > now      # the abort's time + backoff_seconds
        assert f"until {cell['backoff_until']}" in cell["reason"]
        assert cell["last_message"] == "300 Nothing to do"
    panel = view["machinetypes"][0]
    assert panel["backoff_until"] == view["slots"][0]["backoff_until"]
    assert panel["codes"] == {"300": 2} and panel["fizzles"] == 2
    assert [f["code"] for f in view["finished"]] == ["300", "300"]
    assert view["health"]["level"] == "warning"
    html = statuspages.factory_page(view, 30)
    assert 'data-state="backoff"' in html and "backoff until" in html
    until = view["slots"][0]["backoff_until"]
    assert str(until) not in html                # shown as a time of day, not Unix seconds
    assert f"backoff of alpha until {statuspages.clock(until)} UTC" in html


def test_the_last_cycles_errors_are_listed_escaped(world):
    w = world()
    w.run()
    config = w.load()
    plan = json.loads(open(config.settings.paths.plan).read())
    plan.update(errors=[f"f1-00.example.com: creation failed: {SCRIPT}"], cycle_errors=1)
    with open(config.settings.paths.plan, "w") as f:
        json.dump(plan, f)
    view = factory_view(config, now=T0)
    assert view["health"]["level"] == "warning"
    assert view["health"]["reasons"] == ["last cycle: 1 errors"]
    html = statuspages.factory_page(view, 30)
    assert_escaped(html)
    assert "creation failed: &lt;script&gt;alert(1)&lt;/script&gt;</li>" in html


def test_an_idle_slot_says_why(world):
    w = world("draining = yes")
    w.run()
    view = factory_view(w.load(), now=T0)
    assert {c["state"] for c in view["slots"]} == {"idle"}
    assert {c["reason"] for c in view["slots"]} == {"draining"}
    assert view["idle_reasons"] == [{"reason": "draining", "ordinals": [0, 1], "count": 2}]
    html = statuspages.factory_page(view, 30)
    assert html.count('class="why">draining</div>') == 2
    assert "<b>2</b> slots (00, 01): <span" in html


def test_a_failed_creation_shows_a_failed_slot_with_its_reason(world):
    w = world()
    w.conf.write_text(w.conf.read_text().replace(
        "fake_shutdown_message = 200 Success", "fake_create_error = image not found"))
    w.run()
    view = factory_view(w.load(), now=T0 + 5)
    assert view["counts"]["failed"] == 1 and view["counts"]["idle"] == 1
    failed = view["slots"][0]
    assert failed["state"] == "failed" and failed["machine"] is not None
    assert failed["reason"] == "alpha: creation failed: fake f1-00.example.com: image not found"
    assert failed["idle_reason"]["kind"] == "creation_failed"
    assert failed["idle_reason"]["machinetype"] == "alpha"
    assert failed["errors"] == 1 and failed["last_message"].startswith("700 Vac: creation")
    assert view["slots"][1]["idle_reason"]["kind"] == "deferred"
    assert view["health"]["level"] == "warning"
    assert "1 slots whose last creation failed" in view["health"]["reasons"]
    html = statuspages.factory_page(view, 30)
    assert 'data-state="failed"' in html and "<b>1</b> failed" in html


def test_a_rejected_configuration_makes_the_verdict_failing_with_the_reason(world):
    w = world()
    w.run()
    good = w.load()
    w.conf.write_text(w.conf.read_text().replace("machine_model = fake",
                                                 "machine_model = dokcer"))
    w.run(60)
    view = factory_view(good, now=T0 + 61)
    assert view["health"]["level"] == "failing"
    (first, *_) = view["health"]["reasons"]
    assert first.startswith("configuration rejected: ") and "dokcer" in first
    assert first.endswith("; no machines are created")
    assert view["health"]["config_state"] == "rejected"
    assert [c["state"] for c in view["slots"]] == ["running", "running"]   # still managed
    html = statuspages.factory_page(view, 30)
    assert 'data-level="failing"' in html and "dokcer" in html
    w.write("gocdb_sitename = UKI-EXAMPLE\nhs06_per_processor = 10")       # fixed
    w.run(60)
    assert factory_view(good, now=T0 + 121)["health"]["level"] == "ok"


def test_before_any_cycle_every_slot_is_idle_and_says_so(world):
    w = world()
    view = factory_view(w.load(), now=T0)
    assert [c["reason"] for c in view["slots"]] == ["no cycle has run yet"] * 2
    assert view["health"]["level"] == "warning"


def test_superslots_group_live_machines_by_their_shutdown_time():
    cells = [{"state": "running", "shutdown_time": 200},
             {"state": "idle", "shutdown_time": None},
             {"state": "starting", "shutdown_time": 100},
             {"state": "running", "shutdown_time": 200}]
    groups = superslot_groups(cells, 2)
    assert [(g["shutdown_time"], len(g["cells"])) for g in groups] == [(100, 1), (200, 2),
                                                                       (None, 1)]
    assert superslot_groups(cells, 1) == [{"label": None, "shutdown_time": None,
                                           "cells": cells}]


def test_superslots_are_drawn_as_framed_groups_with_their_end(world):
    w = world()
    w.run()
    view = factory_view(w.load(), now=T0)
    view["groups"] = superslot_groups(view["slots"], 2)
    html = statuspages.factory_page(view, 30)
    end = view["slots"][0]["shutdown_time"]
    assert f"superslot 1 &middot; ends {statuspages.utc(end)}" in html
    assert html.count('class="group"') == 1 and html.count('class="cell ') == 2


def test_space_shares_come_from_the_last_poll(world):
    from vac.space.censusdata import Census
    w = world("factories = f1.example.com f2.example.com")
    w.run()
    assert factory_view(w.load(), now=T0)["machinetypes"][0]["space_share"] is None  # no poll
    space = SpaceView({"alpha": Census(running_hs06=6.0, running_machines=6)}, [], T0)
    panel = factory_view(w.load(), now=T0, space=space)["machinetypes"][0]
    assert panel["space_share"] == 1.0 and panel["space_running"] == 8   # 2 here, 6 there
    silent = factory_view(w.load(), now=T0, space=SpaceView({}, ["f2.example.com"], T0))
    assert silent["machinetypes"][0]["space_share"] == 1.0    # polled, nobody else answered


def test_hostile_shutdown_message_and_joboutputs_names_render_as_text(world):
    w = world()
    w.run()
    directory = first_machine(w)
    directory.write("joboutputs/shutdown_message", f"200 {SCRIPT} {IMG}")
    directory.write("joboutputs/<script>alert(2)<script>", "x")   # a name has no "/"
    directory.write(f"joboutputs/{IMG}", "y")
    directory.write("console.log", f"boot {SCRIPT}\n")
    w.run(1500)                                  # finished with the guest's message
    config = w.load()
    view = factory_view(config, now=w.clock.now)
    assert any(SCRIPT in (f["shutdown_message"] or "") for f in view["finished"])
    html = statuspages.factory_page(view, 30)
    assert_escaped(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    page = statuspages.machine_page(machinefiles.machine_view(config, directory, T0), 30)
    assert_escaped(page)
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 2   # message, console
    assert "&lt;script&gt;alert(2)&lt;script&gt;" in page
    assert page.count("&#34;&gt;&lt;img src=x onerror=alert(1)&gt;") >= 2   # message, name


def test_hostile_pipe_strings_render_as_text(world):
    w = world()
    w.conf.write_text(w.conf.read_text().replace("accounting_fqan = /lhcb/Role=pilot",
                                                 f"accounting_fqan = /lhcb/{IMG}"))
    w.run()
    config = w.load()
    view = factory_view(config, now=T0)
    assert view["machinetypes"][0]["fqan"] == f"/lhcb/{IMG}"
    view["warnings"] = [f"pipe: entry skipped: suffix '{SCRIPT}' must be 1 to 40 characters"]
    html = statuspages.factory_page(view, 30)
    assert_escaped(html)
    assert "&lt;script&gt;" in html and "onerror=alert(1)&gt;" in html


def test_templates_refuse_a_missing_name():
    with pytest.raises(jinja2.UndefinedError):
        statuspages.factory_page({"factory": "f", "health": {"level": "ok"}}, 30)
    with pytest.raises(jinja2.UndefinedError):
        statuspages.render("space", {"space": "s"}, 30, "t")
    env = statuspages.environment()
    assert env.autoescape is True and env.undefined is jinja2.StrictUndefined


def test_the_pages_are_inline_and_refresh_themselves(world):
    w = world()
    w.run()
    html = statuspages.factory_page(factory_view(w.load(), now=T0), 17)
    assert '<meta http-equiv="refresh" content="17">' in html
    assert "<title>HEALTHY f1.example.com: Vac factory</title>" in html   # a tab says it too
    for outside in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert outside not in html.replace("http://www.w3.org", ""), outside
    assert statuspages.refresh_seconds(60.0) == 30 and statuspages.refresh_seconds(1.0) == 5
    assert statuspages.refresh_seconds(60.0, 0) == 0


def test_machine_files_are_bounded_and_symlinks_never_followed(world, tmp_path):
    w = world()
    w.run()
    config = w.load()
    directory = first_machine(w)
    secret = tmp_path / "secret"
    secret.write_text("TOP-SECRET")
    directory.write("console.log", "old line\n" * 100000 + "last line\n")
    for i in range(500):
        directory.write(f"joboutputs/file{i:03d}", "z")
    os.symlink(str(secret), directory.file("joboutputs/shutdown_message"))
    os.symlink(str(secret), directory.file("jobfeatures/evil"))
    directory.write("jobfeatures/big", "9" * 5000)
    view = machinefiles.machine_view(config, directory, T0)
    assert len(view["console"]["text"]) == machinefiles.TAIL_LIMIT
    assert view["console"]["text"].endswith("last line\n")
    assert view["joboutputs"]["total"] == 501 and len(view["joboutputs"]["entries"]) == 200
    assert "first 200 of 501" in view["joboutputs"]["note"]
    assert view["shutdown_message"] is None
    features = {v["key"]: v for v in view["jobfeatures"]}
    assert features["evil"]["value"] is None and features["big"]["value"] is None
    page = statuspages.machine_page(view, 30)
    assert "TOP-SECRET" not in page and "TOP-SECRET" not in json.dumps(view)
    os.unlink(directory.file("console.log"))
    os.symlink(str(secret), directory.file("console.log"))
    assert machinefiles.machine_view(config, directory, T0)["console"]["text"] is None


def test_image_version_is_shown_when_backend_json_has_it(world):
    w = world()
    w.run()
    config = w.load()
    directory = first_machine(w)
    record = directory.read_backend_record()
    view = machinefiles.machine_view(config, directory, T0)
    assert view["image_version"] is None and "image-version" not in \
        statuspages.machine_page(view, 30)
    directory.write_backend_record({**record, "image_version": "sha256:" + "ab" * 32})
    view = machinefiles.machine_view(config, directory, T0)
    assert view["image_version"] == "sha256:" + "ab" * 32
    assert "sha256:abab" in statuspages.machine_page(view, 30)
    cell = slots_of(factory_view(config, now=T0))["f1-00.example.com"]
    assert cell["image_version"] == "sha256:" + "ab" * 32


def test_machine_names_are_checked_against_the_slots_and_the_listing(world, tmp_path):  # noqa: E501
    w = world()
    w.run()
    config = w.load()
    name = os.path.basename(first_machine(w).path)
    assert machinefiles.directory_named(config, name) is not None
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(str(outside), os.path.join(config.settings.paths.machines,
                                          "1_alpha_f1-01.example.com"))
    for bad in ("..", "../../etc", f"../{name}", "1_alpha_f1-01.example.com",
                "1_alpha_other-00.example.com", f"{name}/joboutputs", "", "x_y_z"):
        assert machinefiles.directory_named(config, bad) is None, bad
    assert machinefiles.directory_of_slot(config, "../slots") is None
    assert machinefiles.directory_of_slot(config, "f1-99.example.com") is None


def test_space_rows_from_the_census_with_silent_factories_marked(world):
    w = world("factories = f1.example.com f2.example.com f3.example.com f4.example.com")
    w.run()
    config = w.load()
    folder = os.path.join(config.settings.state_dir, "space-census")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "f2.example.com"), "w") as f:
        json.dump({"total_machines": 4, "running_machines": 3, "load_average": 1.5}, f)
    with open(os.path.join(folder, "f3.example.com"), "w") as f:
        f.write('{"total_machines": 1e300, "running_machines": 2, "load_average": NaN, '
                '"factory_heartbeat_time": Infinity}')
    os.utime(os.path.join(folder, "f2.example.com"), (T0, T0))
    os.utime(os.path.join(folder, "f3.example.com"), (T0, T0))
    view = space_view(config, now=T0 + 60, space=SpaceView({}, ["f3.example.com"], T0))
    json.dumps(view, allow_nan=False)            # what the API serves: strict JSON
    rows = {r["factory"]: r for r in view["rows"]}
    assert list(rows) == ["f1.example.com", "f2.example.com", "f3.example.com",
                          "f4.example.com"]
    assert rows["f1.example.com"]["local"] and rows["f1.example.com"]["cells"] == \
        ["running", "running"]
    assert rows["f2.example.com"]["cells"] == ["running"] * 3 + ["idle"]
    assert not rows["f2.example.com"]["silent"]
    assert rows["f3.example.com"]["silent"] and len(rows["f3.example.com"]["cells"]) == 1024
    assert rows["f4.example.com"]["silent"] and rows["f4.example.com"]["cells"] == []
    assert view["silent"] == ["f3.example.com", "f4.example.com"]
    html = statuspages.space_page(view, 30)
    assert html.count('data-silent="yes"') == 2


# The HTTP side ------------------------------------------------------------------------------

def get(path, method="GET", port=PORT):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


@pytest.fixture
def served(world):
    w = world(f"status_port = {PORT}")
    w.run()
    endpoint = StatusEndpoint(w.load)
    endpoint.after_cycle()
    yield w, endpoint
    endpoint.close()


def test_the_endpoint_is_off_unless_status_port_is_set(world):
    w = world()
    w.run()
    endpoint = StatusEndpoint(w.load)
    endpoint.after_cycle()
    assert endpoint.server is None and endpoint.bound is None


def test_pages_and_api_are_served(served):
    w, endpoint = served
    assert endpoint.bound == ("127.0.0.1", PORT)
    status, headers, body = get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert body.decode().count('class="cell state-running"') == 2
    status, headers, body = get("/api/factory")
    data = json.loads(body)
    assert status == 200 and [c["state"] for c in data["slots"]] == ["running", "running"]
    assert json.loads(get("/api")[2])["/api/space"]
    assert get("/space")[0] == 200 and json.loads(get("/api/space")[2])["rows"]
    status, _, body = get("/slot/f1-00.example.com")
    assert status == 200 and "jobfeatures/" in body.decode()
    api = json.loads(get("/api/slot/f1-00.example.com")[2])
    assert api["slot"] == "f1-00.example.com" and api["state"] == "Running"
    machine = api["machine"]
    assert json.loads(get(f"/api/machine/{machine}")[2])["machine"] == machine
    status, headers, body = get("/", "HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000


def test_unknown_paths_and_foreign_names_are_404_and_only_get_and_head_answer(served):
    for path in ("/nothing", "/slot/../../etc/passwd", "/slot/..%2F..%2Fetc%2Fpasswd",
                 "/machine/..%2Fslots", "/machine/%2e%2e", "/slot/f1-07.example.com",
                 "/api/machine/1_alpha_f1-00.example.com", "/api/slot/", "/api/nothing",
                 "/slot/f1-00.example.com/joboutputs", "/machine/"):
        status, _, body = get(path)
        assert status == 404, path
        assert b"passwd" not in body or b"root:" not in body
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = get("/", method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    assert get("/" + "a" * 3000)[0] == 414


def test_a_shared_port_serves_metrics_beside_the_pages(world):
    w = world(f"status_port = {PORT + 1}\nmetrics_port = {PORT + 1}")
    metrics = MetricsEndpoint(w.load)
    status = StatusEndpoint(w.load, metrics=metrics)
    try:
        report = w.run()
        metrics.after_cycle(report, 0.1)
        status.after_cycle()
        assert metrics.server is None and metrics.metrics is not None
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT + 1}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert 'vac_slots{machinetype="alpha",state="running"} 2.0' in text
        assert get("/", port=PORT + 1)[0] == 200
    finally:
        status.close()
        metrics.close()


def test_vac_doctor_checks_the_status_port_when_set(make_config):
    from vac.ops import doctor

    config = make_config(f"""
        [settings]
        vac_space = vac01.example.com
        vacquery_port = {PORT + 2}
        vacquery_address = 127.0.0.1
        status_port = {PORT + 3}
        """)
    lines = {c.name: c for c in doctor.run_checks(config)}
    assert lines["status-port"].detail == f"tcp 127.0.0.1:{PORT + 3} free"
    shared = make_config(f"""
        [settings]
        vac_space = vac01.example.com
        vacquery_port = {PORT + 2}
        metrics_port = {PORT + 3}
        status_port = {PORT + 3}
        """)
    names = [c.name for c in doctor.run_checks(shared)]
    assert "metrics-port" in names and "status-port" not in names


def test_a_name_that_is_not_utf8_is_shown_with_a_replacement_character(served):
    w, _ = served
    directory = first_machine(w)
    with open(os.fsencode(directory.file("joboutputs")) + b"/bad-\xff-name", "wb") as f:
        f.write(b"x")
    status, _, body = get("/slot/f1-00.example.com")
    assert status == 200 and "bad-\ufffd-name" in body.decode()
    api = json.loads(get("/api/slot/f1-00.example.com")[2])
    assert "bad-\ufffd-name" in [e["name"] for e in api["joboutputs"]["entries"]]


def test_connections_beyond_the_limit_are_closed_and_the_page_still_answers(served):
    import socket

    from vac.web import statusserver
    idle = []
    try:
        for _ in range(statusserver.CONNECTIONS + 10):   # each sends nothing and waits
            idle.append(socket.create_connection(("127.0.0.1", PORT), timeout=5))
        extra = idle[-1]
        extra.settimeout(5)
        assert extra.recv(1) == b""                      # closed by the server at once
    finally:
        for sock in idle:
            sock.close()
    assert wait_for(lambda: get("/")[0] == 200)


def wait_for(check, timeout=15.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def test_target_and_actual_shares_here_and_over_the_space(world):
    from vac.space.censusdata import Census
    w = world("factories = f1.example.com f2.example.com")
    beta = w.conf.read_text().split("[machinetype alpha]")[1].replace("target_share = 1",
                                                                      "target_share = 3")
    w.conf.write_text(w.conf.read_text() + "\n[machinetype beta]" + beta)
    w.run()
    view = factory_view(w.load(), now=T0, space=SpaceView(
        {"alpha": Census(running_hs06=2.0), "beta": Census(running_hs06=0.0)}, [], T0))
    panels = {p["machinetype"]: p for p in view["machinetypes"]}
    assert sorted(c["machinetype"] for c in view["slots"]) == ["alpha", "beta"]
    assert panels["alpha"]["target_share"] == 0.25 and panels["beta"]["target_share"] == 0.75
    assert panels["alpha"]["factory_share"] == 0.5 and panels["beta"]["factory_share"] == 0.5
    assert panels["alpha"]["space_share"] == 0.75 and panels["beta"]["space_share"] == 0.25
    assert panels["alpha"]["marker"] == "A" and panels["beta"]["marker"] == "B"
