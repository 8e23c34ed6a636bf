# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: one cycle filling N empty Apptainer slots against the best raw fill with 1, 2, 4
and 8 concurrent `runuser ... apptainer exec` calls, all in the same run.

Both sides run the busybox sandbox as vacsngly and are timed until every payload has touched
its file in a bound directory. vacd's side is Factory.run_cycle() of an empty N-slot factory
(apptainer_parallel_creations at its default) plus the wait for the last payload. The zombie
killer is only shown this benchmark's processes. Target: ratio to the best raw fill <= 1.15.

    python3 bench/apptainer_fill.py [--slots 8] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import rawapptainer  # noqa: E402
from vac.backends.apptainer.backend import ApptainerBackend  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle.backendpool import BackendPool  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host import cgroups, procs  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine.directory import MachineDir  # noqa: E402

WIDTHS = (1, 2, 4, 8)
TARGET = 1.15
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = {factory}
state_dir = {state}
singularity_user = {user}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = 128

[machinetype app]
machine_model = singularity
target_share = 1
root_image = {image}
user_data = {template}
"""


def only_these_processes(backend: ApptainerBackend, parent: str) -> None:
    real = procs.pids_of_user
    key = cgroups.membership_key(backend.hierarchy)

    def ours(uid, proc_root="/proc"):
        return [p for p in real(uid, proc_root)
                if procs.cgroups_of(p, proc_root).get(key, "").startswith(f"/{parent}/")]

    procs.pids_of_user = ours


def vacd_fill(top: str, slots: int, round_: int, backend_for) -> float:
    state = os.path.join(top, f"state{round_}")
    conf = os.path.join(top, f"vac{round_}.conf")
    template = os.path.join(top, "user_data")
    with open(conf, "w") as f:
        f.write(CONF.format(factory=f"af{uuid.uuid4().hex[:6]}.example.com", state=state,
                            user=rawapptainer.USER, slots=slots, image=rawapptainer.IMAGE,
                            template=template))
    host = HostFacts.read()
    read = lambda: load.build(load.read_raw([conf]), host)  # noqa: E731
    backend = backend_for(read().settings)
    factory = Factory(read, BackendPool(backend.settings, {"apptainer": backend}))
    start = time.perf_counter()
    report = factory.run_cycle()
    if len(report.created) != slots:
        raise SystemExit(f"the cycle created {len(report.created)} of {slots}: {report.errors}")
    for name in report.created:
        d = MachineDir.for_slot(factory.config.settings.paths, name)
        rawapptainer.wait_for(d.file("joboutputs/F"))
    took = time.perf_counter() - start
    for name in report.created:
        backend.destroy(name, MachineDir.for_slot(factory.config.settings.paths, name))
    shutil.rmtree(state, ignore_errors=True)
    return took


def raw_fill(binary: str, top: str, slots: int, width: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=width) as pool:
        list(pool.map(lambda _: rawapptainer.raw_exec(binary, rawapptainer.IMAGE, top),
                      range(slots)))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="vac-bench-fill-", dir="/var/tmp")
    os.chmod(top, 0o755)
    with open(os.path.join(top, "user_data"), "w") as f:
        f.write(f"#!/bin/sh\n{rawapptainer.PAYLOAD}\n")
    parent = f"vac-bench-{uuid.uuid4().hex[:8]}"
    backends: List[ApptainerBackend] = []

    def backend_for(settings) -> ApptainerBackend:
        backend = ApptainerBackend(settings, cgroup_parent=parent)
        if not backends:
            only_these_processes(backend, parent)
        backends.append(backend)
        return backend

    ours: List[float] = []
    raw: Dict[int, List[float]] = {w: [] for w in WIDTHS}
    try:
        vacd_fill(top, args.slots, -1, backend_for)                    # warm-up
        binary = backends[0].binary()
        for r in range(args.rounds):
            ours.append(vacd_fill(top, args.slots, r, backend_for))
            for width in WIDTHS:
                raw[width].append(raw_fill(binary, top, args.slots, width))
    finally:
        if backends:
            rawapptainer.remove_cgroups(backends[0], parent)
        shutil.rmtree(top, ignore_errors=True)
    best = min(WIDTHS, key=lambda w: statistics.median(raw[w]))
    value = statistics.median(ours) / statistics.median(raw[best])
    print(f"apptainer: fill {args.slots} slots, {args.rounds} rounds, medians")
    print(f"  vacd one cycle, payloads running       {statistics.median(ours) * 1000:8.1f} ms")
    for width in WIDTHS:
        print(f"  raw fill, {width} exec at once            "
              f"{statistics.median(raw[width]) * 1000:8.1f} ms" + ("  <- best" if width == best
                                                                   else ""))
    print(f"  ratio vacd / best raw = {value:.2f}  (target <= {TARGET}: "
          f"{'ok' if value <= TARGET else 'OVER TARGET'})")
    return 0 if value <= TARGET else 2


if __name__ == "__main__":
    sys.exit(main())
