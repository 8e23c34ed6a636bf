# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: the status page at 100 and 1,000 slots on the fake backend.

A factory is filled by real cycles on the in-memory fake backend (bench/cycle.py's) up to
total_processors (nine tenths of the slots: the rest idle, with the planner's reason), then a
tenth of its machines end (machinetype a's with an abort: a backoff) and are refilled, so the
page has running and idle cells, panels with outcomes and a list of finished machines.
Then, each the median of --repeat:
(a) the data model alone (vac.web.status.factory_view: every slot's files read from disk),
(b) the rendering alone (Jinja2, the factory page), (c) a whole page load over loopback HTTP
from vacd's status server (GET /, body read) and (d) the JSON API (GET /api/factory); and,
with chromium, chromedriver and selenium installed (scripts/ci/setup-browser.sh), (e) the page
in headless chromium, navigation start to the load event. Run:

    python3 bench/status_page.py [--repeat N] [--port P]
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from typing import Callable, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.cycle import Clock, MemoryFake  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle.backendpool import BackendPool  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.web import statuspages  # noqa: E402
from vac.web.status import factory_view  # noqa: E402
from vac.web.statusserver import StatusEndpoint  # noqa: E402

SIZES = (100, 1_000)
CONF = """
[settings]
state_dir = {state}
vac_space = bench.example.com
factory_name = s1.example.com
enable_fake_backend = true
host_processors = {slots}
total_processors = {total}
overload_per_processor = 100000
max_creations_per_cycle = 100000
status_port = {port}

[machinetype a]
machine_model = fake
target_share = 3
user_data = {user_data}
fake_run_seconds = 100000
fake_shutdown_message = 300 Nothing to do
backoff_seconds = 3600
fizzle_seconds = 0

[machinetype b]
machine_model = fake
target_share = 1
user_data = {user_data}
fake_run_seconds = 100000
fake_shutdown_message = 200 Success
backoff_seconds = 0
fizzle_seconds = 0
"""


def median_ms(repeat: int, step: Callable[[], None]) -> float:
    step()                                       # warm: templates compiled, caches filled
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def build(top: str, slots: int, port: int):
    """A factory of `slots` slots after a fill and a cycle that finished a tenth."""
    user_data = os.path.join(top, "user_data")
    with open(user_data, "w") as f:
        f.write("#!/bin/sh\n")
    conf = os.path.join(top, "vac.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(state=os.path.join(top, "state"), slots=slots, user_data=user_data,
                            port=port, total=slots * 9 // 10))
    host = HostFacts(fqdn="s1.example.com", processors=slots, uid_of=lambda _: None,
                     vg_exists=lambda _: False)

    def read():
        return load.build(load.read_raw([conf]), host)

    clock = Clock()
    clock.now = time.time()      # the pages read the real clock
    backend = MemoryFake(read().settings, clock=clock)
    factory = Factory(read, BackendPool(read().settings, {"fake": backend}), clock=clock,
                      loadavg=lambda: (0.0, 0.0, 0.0), rng=random.Random(1))
    factory.started = clock.now - 100_000
    factory.run_cycle()
    clock.now += 2
    for name in random.Random(slots).sample(sorted(backend.machines), max(1, slots // 10)):
        backend.machines[name]["run_seconds"] = 0.0
    factory.run_cycle()
    return read


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def browser_load_ms(url: str, repeat: int, profile: str) -> Optional[float]:
    """Median navigation-start-to-load-event of the page in headless chromium, or None."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None
    options = webdriver.ChromeOptions()
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")),
                              options=options)
    try:
        times: List[float] = []
        for i in range(repeat + 1):
            driver.get(url)
            took = driver.execute_script(
                "const t = performance.getEntriesByType('navigation')[0];"
                "return t.loadEventEnd - t.startTime;")
            if i:
                times.append(float(took))
        return statistics.median(times)
    finally:
        driver.quit()


def measure(slots: int, repeat: int, port: int, tmp: str) -> Dict[str, Optional[float]]:
    top = tempfile.mkdtemp(dir=tmp)
    read = build(top, slots, port)
    config = read()
    view = factory_view(config)
    endpoint = StatusEndpoint(read)
    endpoint.after_cycle()
    assert endpoint.bound == ("127.0.0.1", port), "the status port could not be bound"
    base = f"http://127.0.0.1:{port}"
    try:
        page = get(base + "/")
        result: Dict[str, Optional[float]] = {
            "model": median_ms(repeat, lambda: factory_view(config)),
            "render": median_ms(repeat, lambda: statuspages.factory_page(view, 30)),
            "http": median_ms(repeat, lambda: get(base + "/")),
            "api": median_ms(repeat, lambda: get(base + "/api/factory")),
            "kb": len(page) / 1024,
            "cells": float(page.decode().count('class="cell ')),
            "browser": browser_load_ms(base + "/?refresh=0", repeat,
                                       os.path.join(top, "profile"))}
    finally:
        endpoint.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--port", type=int, default=18590)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(n, measure(n, args.repeat, args.port + i, tmp)) for i, n in enumerate(SIZES)]
    print(f"status page on the fake backend, a tenth of the slots idle, median of "
          f"{args.repeat}, Python {sys.version.split()[0]}")
    print(f"{'slots':>6} {'cells':>6} {'model ms':>9} {'render ms':>10} {'GET / ms':>9} "
          f"{'API ms':>7} {'page kB':>8} {'chromium load ms':>17}")
    for n, r in rows:
        browser = f"{r['browser']:.0f}" if r["browser"] is not None else "n/a"
        print(f"{n:>6} {r['cells']:>6.0f} {r['model']:>9.1f} {r['render']:>10.1f} "
              f"{r['http']:>9.1f} {r['api']:>7.1f} {r['kb']:>8.0f} {browser:>17}")


if __name__ == "__main__":
    main()
