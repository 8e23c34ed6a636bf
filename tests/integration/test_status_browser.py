# SPDX-License-Identifier: BSD-2-Clause
"""The status page of a real vacd with real Docker machines, in a real browser: Debian's
chromium driven headless by Selenium through Debian's chromedriver (scripts/ci/setup-browser.sh).

The factory has 4 slots and total_processors 3: slots 00-02 get machines; 00's payload writes a
hostile shutdown_message (code 300, an abort) and hostile joboutputs names and ends, so
sleeper backs off and slots 00 and 03 stay idle with the planner's reason, while 01 and 02
run on. A Vacuum Pipe (file://) brings hostile suffixes (skipped, shown as warnings) and a
machinetype whose accounting_fqan is hostile. The test checks one cell per slot with the
right states, an idle slot's reason, that clicking a cell opens the machine page, that every
hostile string is shown as text (no alert, no injected img/script element), and saves a
screenshot of each page in the test's tmp_path (and in $VAC_TEST_SCREENSHOTS when set)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.request
import uuid

import pytest
from docker_engine import IMAGE, engine_ready, sdk
from testbed import require_engine
from vacd_process import start_vacd, stop
from waiting import ENGINE_CALL, Stopwatch, wait_until

pytestmark = [pytest.mark.docker]

PORT = 18510
SCRIPT = "<script>alert(1)</script>"
IMG = '"><img src=x onerror=alert(1)>'
NAME_SCRIPT = "<script>alert(2)<script>"       # a file name cannot hold "/"
BROWSER_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--window-size=1400,1000")
CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = status.example.com
factory_name = {factory}
factories = {factory} silent.invalid
udp_timeout_seconds = 0.5
state_dir = {state}
host_processors = 4
total_processors = 3
overload_per_processor = 1000
mb_per_processor = 64
status_port = {port}

[machinetype sleeper]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
backoff_seconds = 900

[vacuum_pipe evil]
vacuum_pipe_url = file://{pipe}
target_share = 1
"""
PAYLOAD = """#!/bin/sh
case "$(hostname)" in
  *-00.*)
    : > '/var/spool/joboutputs/{name_script}'
    : > '/var/spool/joboutputs/{img}'
    echo '300 Bad {script} {img}' > /var/spool/joboutputs/shutdown_message
    sleep 2
    exit 0 ;;
esac
exec sleep 300
"""


def pipe_text() -> str:
    return json.dumps({"machinetypes": [
        {"suffix": SCRIPT, "target_share": 1},
        {"suffix": IMG, "target_share": 1},
        {"suffix": "quiet", "target_share": 0, "machine_model": "docker",
         "root_image": f"docker://{IMAGE}", "accounting_fqan": f"/evil/{IMG}"}]})


def api(path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}{path}", timeout=5) as r:
        return json.loads(r.read())


def states() -> dict:
    try:
        return {c["slot"]: c["state"] for c in api("/api/factory")["slots"]}
    except OSError:
        return {}


def browser_ready() -> None:
    have = shutil.which("chromium") and shutil.which("chromedriver")
    require_engine("chromium", bool(have), "run scripts/ci/setup-browser.sh")
    try:
        import selenium  # noqa: F401
    except ImportError as e:
        require_engine("selenium", False, f"{e}; run scripts/ci/setup-browser.sh")


@pytest.fixture
def vacd(tmp_path):
    engine_ready()
    browser_ready()
    factory = f"sp{uuid.uuid4().hex[:8]}.example.com"
    (tmp_path / "user_data").write_text(PAYLOAD.format(script=SCRIPT, img=IMG,
                                                       name_script=NAME_SCRIPT))
    (tmp_path / "evil.pipe").write_text(pipe_text())
    census = tmp_path / "state" / "space-census"
    census.mkdir(parents=True)
    (census / "peer.invalid").write_text(json.dumps({"total_machines": 8,
                                                      "running_machines": 5}))
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(engine_call=ENGINE_CALL,
                                factory=factory, state=tmp_path / "state", port=PORT,
                                image=IMAGE, user_data=tmp_path / "user_data",
                                pipe=tmp_path / "evil.pipe"))
    log_path = str(tmp_path / "vacd.log")
    proc = start_vacd(str(conf), log_path)
    yield factory, proc, log_path
    stop(proc, signal.SIGTERM)
    remove_machines(str(conf), factory)


def remove_machines(conf: str, factory: str) -> None:
    """This test's containers: through the backend (it removes their cgroup parents too),
    then whatever is left by label."""
    from vac.backends.docker.backend import DockerBackend
    from vac.config import load
    from vac.host.facts import HostFacts

    backend = DockerBackend(load.build(load.read_raw([conf]), HostFacts.read()).settings)
    for machine in backend.list_machines():
        backend.destroy(machine.name, None)
    api_client = sdk()
    for c in api_client.containers(all=True, filters={"label": f"vac.factory={factory}"}):
        api_client.remove_container(c["Id"], force=True)


@pytest.fixture
def driver(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in BROWSER_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.binary_location = shutil.which("chromium")
    service = Service(executable_path=shutil.which("chromedriver"),
                      log_output=str(tmp_path / "chromedriver.log"))
    browser = webdriver.Chrome(service=service, options=options)
    browser.set_page_load_timeout(30)
    yield browser
    browser.quit()


def screenshot(driver, tmp_path, name: str) -> str:
    """The whole page (the window grown to the document's height), in tmp_path."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1400, max(800, min(int(height) + 40, 6000)))
    path = str(tmp_path / f"{name}.png")
    assert driver.save_screenshot(path), path
    copy_to = os.environ.get("VAC_TEST_SCREENSHOTS")
    if copy_to:
        os.makedirs(copy_to, exist_ok=True)
        shutil.copy(path, os.path.join(copy_to, f"{name}.png"))
    driver.set_window_size(1400, 1000)
    return path


def assert_nothing_injected(driver) -> None:
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018 - raises when no alert is open
    assert driver.find_elements(By.CSS_SELECTOR, "img") == []
    assert driver.find_elements(By.CSS_SELECTOR, "[onerror]") == []
    assert driver.find_elements(By.CSS_SELECTOR, "script") == []


def test_the_status_page_in_a_real_browser(vacd, driver, tmp_path):
    from selenium.webdriver.common.by import By

    factory, proc, log_path = vacd
    slot = [f"{factory.split('.')[0]}-{n:02d}.{factory.partition('.')[2]}" for n in range(4)]
    want = {slot[0]: "backoff", slot[1]: "running", slot[2]: "running", slot[3]: "backoff"}
    assert wait_until(lambda: states() == want, step=0.5), \
        (states(), open(log_path).read()[-3000:])
    base = f"http://127.0.0.1:{PORT}"

    # The factory page: one cell per slot with its state, an idle slot's reason.
    driver.get(base + "/?refresh=0")
    cells = driver.find_elements(By.CSS_SELECTOR, "a.cell")
    assert [c.get_attribute("data-slot") for c in cells] == slot
    assert {c.get_attribute("data-slot"): c.get_attribute("data-state") for c in cells} == want
    idle = cells[3].text
    assert "backoff of sleeper until" in idle and "backoff until" in idle
    assert driver.find_element(By.ID, "verdict").get_attribute("data-level") == "warning"
    panel = driver.find_element(By.CSS_SELECTOR, '.panel[data-machinetype="sleeper"]').text
    assert "2 running" in panel and "target 100% · here 100% · space 100%" in panel
    assert "backoff until" in panel and "300×1" in panel
    body = driver.find_element(By.TAG_NAME, "body").text
    assert f"300 Bad {SCRIPT} {IMG}" in body                 # last finished, as text
    assert f"/evil/{IMG}" in body                             # the pipe's accounting_fqan
    assert repr(SCRIPT) in body and repr(IMG) in body         # the pipe's skipped suffixes
    assert driver.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]') == []
    assert_nothing_injected(driver)
    screenshot(driver, tmp_path, "factory")

    # Clicking the idle slot 00 opens its machine page: the hostile files as text.
    cells[0].click()
    assert wait_until(lambda: driver.current_url.endswith(f"/slot/{slot[0]}"))
    assert driver.find_element(By.ID, "machine-name").text.startswith(slot[0])
    assert driver.find_element(By.ID, "shutdown-message").text == f"300 Bad {SCRIPT} {IMG}"
    assert "backoff of sleeper until" in driver.find_element(By.ID, "reason").text
    listing = driver.find_element(By.ID, "joboutputs").text
    assert NAME_SCRIPT in listing and IMG in listing
    assert driver.find_elements(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
    assert_nothing_injected(driver)
    screenshot(driver, tmp_path, "machine")

    # A running machine's page, reached by clicking its cell.
    pages = Stopwatch()                     # what loading the page costs here now
    pages.time(lambda: driver.get(base + "/?refresh=0"))
    driver.find_element(By.CSS_SELECTOR, f'a.cell[data-slot="{slot[1]}"]').click()
    assert wait_until(lambda: driver.current_url.endswith(f"/slot/{slot[1]}"))
    summary = driver.find_element(By.ID, "summary").text
    assert "Running" in summary and "sleeper" in summary
    assert_nothing_injected(driver)

    # The space page: this factory live, the census's peer, the silent factory marked.
    driver.find_element(By.LINK_TEXT, "Space").click()
    assert wait_until(lambda: driver.current_url.endswith("/space"))
    rows = {r.get_attribute("data-factory"): r for r in
            driver.find_elements(By.CSS_SELECTOR, "#space .row")}
    assert set(rows) == {factory, "peer.invalid", "silent.invalid"}
    assert rows["silent.invalid"].get_attribute("data-silent") == "yes"
    assert "SILENT" in rows["silent.invalid"].text
    assert rows[factory].get_attribute("data-silent") == "no"
    assert len(rows[factory].find_elements(By.CSS_SELECTOR, ".dot")) == 4
    assert len(rows["peer.invalid"].find_elements(By.CSS_SELECTOR, ".dot.running")) == 5
    assert_nothing_injected(driver)
    screenshot(driver, tmp_path, "space")

    # A path that is not ours is a 404 page, not a file.
    driver.get(base + "/slot/..%2F..%2Fetc%2Fpasswd")
    assert "Not found" in driver.find_element(By.TAG_NAME, "body").text
    assert "root:" not in driver.page_source
    assert proc.poll() is None
    started = time.monotonic()
    driver.get(base + "/")
    took = time.monotonic() - started
    assert took < pages.bound(3, 5), (took, pages.samples)
