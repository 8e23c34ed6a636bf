# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: median planner.plan() time at 100, 1,000 and 10,000 slots, measured side by side.

Each size gets a config with several machinetypes (two machinegroups, heartbeat files, one
in backoff) and observations with half the slots running, some shut down, starting or
paused, and the rest free; the census is this factory's plus a remote one. Run:

    python3 bench/planner.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vac.config import load, model  # noqa: E402
from vac.cycle import planner  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine.directory import MachineState  # noqa: E402
from vac.machine.observed import Observed  # noqa: E402
from vac.machine.slots import make_slots  # noqa: E402
from vac.space import censusdata  # noqa: E402

NOW = 1_700_000_000.0
SIZES = (100, 1_000, 10_000)
TYPES = ("atlas-prod", "atlas-mcore", "lhcb", "cms", "alice")

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = {slots}
processors_per_superslot = {per}
hs06_per_processor = 10

[machinetype atlas-prod]
machine_model = fake
target_share = 4
accounting_fqan = /atlas/Role=production
heartbeat_file = heartbeat
heartbeat_seconds = 600
max_processors = {per}
min_wallclock_seconds = 3600

[machinetype atlas-mcore]
machine_model = fake
target_share = 2
accounting_fqan = /atlas/Role=production
min_processors = {per}
max_processors = {per}

[machinetype lhcb]
machine_model = fake
target_share = 3
heartbeat_file = heartbeat

[machinetype cms]
machine_model = fake
target_share = 1

[machinetype alice]
machine_model = fake
target_share = 1
backoff_seconds = 3600
"""


def build_config(slots: int, per: int) -> model.Config:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "vac.conf")
        with open(path, "w") as f:
            f.write(CONF.format(slots=slots, per=per).replace(
                "[settings]", f"[settings]\nstate_dir = {tmp}/state", 1))
        host = HostFacts(fqdn="f1.example.com", processors=slots, uid_of=lambda _: None,
                         vg_exists=lambda _: False)
        return load.build(load.read_raw([path]), host)


def build_observed(slots: int, per: int, rng: random.Random) -> List[Observed]:
    """Half the processors running, a few shut down / starting / paused, the rest free.

    With superslots, running machines fill whole superslots except every 50th slot's, which
    leaves an incomplete superslot to reserve for. Failures (starting, paused, aborts) are
    alice's, the machinetype in backoff, so the others keep being created.
    """
    observed = []
    used = 0
    for slot in make_slots("f1.example.com", slots):
        roll = rng.random()
        mt = TYPES[slot.ordinal % len(TYPES)]
        processors = 1 if per == 1 or slot.ordinal % 50 == 0 else per
        if roll < 0.5 and used + processors <= slots // 2:
            used += processors
            started = NOW - rng.uniform(700, 80_000)
            observed.append(Observed(
                slot=slot, machinetype=mt, model="fake", state=MachineState.RUNNING,
                created=int(started) - 5, started=started, processors=processors,
                shutdown_time=int(started) + 86_400, cpu_seconds=rng.uniform(0, 1e5),
                heartbeat_file_mtime=NOW - rng.uniform(0, 500), hs06=10.0 * processors,
                last_heartbeat=NOW - 60))
        elif roll < 0.55:
            observed.append(Observed(
                slot=slot, machinetype=mt, model="fake", state=MachineState.SHUTDOWN,
                created=int(NOW - 9000), started=NOW - 8990, processors=1,
                shutdown_message="300 No work" if mt == "alice" else "200 Success",
                last_heartbeat=NOW - 60))
        elif roll < 0.57:
            observed.append(Observed(slot=slot, machinetype="alice", model="fake",
                                     state=MachineState.STARTING, created=int(NOW - 60)))
        elif roll < 0.58:
            observed.append(Observed(slot=slot, machinetype="alice", model="fake",
                                     state=MachineState.PAUSED, created=int(NOW - 900),
                                     started=NOW - 890, last_heartbeat=NOW - 60))
        else:
            observed.append(Observed(slot=slot))
    return observed


def build_census(config: model.Config, observed: List[Observed]) -> dict:
    local = censusdata.local_census(observed, {}, config.machinetypes, NOW)
    remote = censusdata.merge_census([
        {"machinetype": name, "running_hs06": 100.0 * i, "num_before_fizzle": i % 2,
         "shutdown_message": "300 No work" if name == "alice" else "200 Success",
         "shutdown_time": int(NOW - 120), "shutdown_machine": "f2-00.example.com"}
        for i, name in enumerate(TYPES)])
    return censusdata.add_census(local, remote)


def measure(slots: int, per: int, repeat: int) -> Tuple[float, int, int]:
    """(median seconds per plan, machines created, idle slots) for one size."""
    config = build_config(slots, per)
    observed = build_observed(slots, per, random.Random(slots))
    census = build_census(config, observed)
    times = []
    plan = None
    for i in range(repeat):
        rng = random.Random(i)
        start = time.perf_counter()
        plan = planner.plan(config, observed, census, load=1.0, now=NOW,
                            daemon_started=NOW - 86_400, rng=rng)
        times.append(time.perf_counter() - start)
    return statistics.median(times), len(plan.creates), len(plan.idle)


def table(per: int, repeat: int) -> None:
    rows = [(n, *measure(n, per, max(5, repeat * 100 // n))) for n in SIZES]
    base = rows[0][1]
    print(f"\nprocessors_per_superslot = {per}")
    print(f"{'slots':>7} {'median ms':>10} {'ratio':>7} {'slots ratio':>12} "
          f"{'us/slot':>8} {'creates':>8} {'idle':>6}")
    for n, median, creates, idle in rows:
        print(f"{n:>7} {median * 1e3:>10.3f} {median / base:>7.1f} {n / SIZES[0]:>12.0f} "
              f"{median * 1e6 / n:>8.2f} {creates:>8} {idle:>6}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=200,
                        help="plans timed at 100 slots (fewer at larger sizes, at least 5)")
    args = parser.parse_args()
    print(f"planner.plan() median wall time, Python {sys.version.split()[0]}, "
          f"max_creations_per_cycle 100 (default)")
    for per in (1, 4):
        table(per, args.repeat)


if __name__ == "__main__":
    main()
