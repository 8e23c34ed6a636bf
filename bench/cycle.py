# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: the whole cycle (observe + plan + apply + housekeeping) at 100, 300 and 1,000
slots on an in-memory fake backend, side by side: is it linear in slots?

Each size: one cycle fills every slot, then steady-state cycles (every machine running:
observed, heartbeated, kept) are timed; a tenth of the machines end before each timed cycle so
finishing and refilling are in it too. The backend keeps its machines in memory, so what is
measured is Vac's own cost (the state directory on this machine's disk included). Run:

    python3 bench/cycle.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from typing import Dict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vac.backends.fake import FakeBackend  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle.backendpool import BackendPool  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402

SIZES = (100, 300, 1_000)
CONF = """
[settings]
state_dir = {state}
vac_space = bench.example.com
factory_name = c1.example.com
enable_fake_backend = true
host_processors = {slots}
overload_per_processor = 100000
max_creations_per_cycle = 100000

[machinetype a]
machine_model = fake
target_share = 3
user_data = {user_data}
fake_run_seconds = 100000
fake_shutdown_message = 200 Success
backoff_seconds = 0
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


class MemoryFake(FakeBackend):
    """The fake backend with its machines in memory instead of a JSON file."""

    def __init__(self, settings, clock=time.time):
        super().__init__(settings, clock)
        self.machines: Dict[str, dict] = {}

    def _load(self) -> Dict[str, dict]:
        return self.machines

    def _save(self, machines: Dict[str, dict]) -> None:
        self.machines = machines


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def measure(slots: int, repeat: int, tmp: str) -> float:
    """Median seconds of a steady-state cycle at this many slots."""
    top = tempfile.mkdtemp(dir=tmp)
    user_data = os.path.join(top, "user_data")
    with open(user_data, "w") as f:
        f.write("#!/bin/sh\necho ##user_data_uuid##\n")
    conf = os.path.join(top, "vac.conf")
    with open(conf, "w") as f:
        f.write(CONF.format(state=os.path.join(top, "state"), slots=slots, user_data=user_data))
    host = HostFacts(fqdn="c1.example.com", processors=slots, uid_of=lambda _: None,
                     vg_exists=lambda _: False)

    def read():
        return load.build(load.read_raw([conf]), host)

    clock = Clock()
    backend = MemoryFake(read().settings, clock=clock)
    factory = Factory(read, BackendPool(read().settings, {"fake": backend}), clock=clock,
                      loadavg=lambda: (0.0, 0.0, 0.0), rng=random.Random(1))
    factory.started = clock.now - 100_000
    factory.run_cycle()
    rng, times = random.Random(slots), []
    for _ in range(repeat):
        clock.now += 2
        for name in rng.sample(sorted(backend.machines), max(1, slots // 10)):
            backend.machines[name]["run_seconds"] = 0.0
        start = time.perf_counter()
        factory.run_cycle()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(n, measure(n, args.repeat, tmp)) for n in SIZES]
    base_n, base = rows[0]
    print(f"whole cycle, a tenth of the machines ending each time, Python "
          f"{sys.version.split()[0]}")
    print(f"{'slots':>7} {'median ms':>10} {'ratio':>7} {'slots ratio':>12} {'ms/slot':>8}")
    for n, median in rows:
        print(f"{n:>7} {median * 1e3:>10.1f} {median / base:>7.2f} {n / base_n:>12.1f} "
              f"{median * 1e3 / n:>8.3f}")


if __name__ == "__main__":
    main()
