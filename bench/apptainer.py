# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: vacd's decision-to-running time for an Apptainer machine, against a raw exec.

Both sides run the busybox sandbox image as vacsngly and time from just before the start until
the payload's first action (touching a file in a bound directory) is visible on the host:

    vacd     Factory.run_cycle() of an empty 1-slot factory (host_processors = 1, a fresh
             state directory and factory_name each time) that creates one singularity
             machine whose user_data is `touch /tmp/joboutputs/F; sleep 5`: the whole cycle
             (config, observe, zombie killer, plan, machine directory, MJF, user_data, cgroup,
             setuid, apptainer exec with MJF/joboutputs/user_data binds)
    raw      runuser -u vacsngly -- apptainer exec --contain --bind D:/tmp/joboutputs IMAGE
             /bin/sh -c 'touch /tmp/joboutputs/F; sleep 5'

alternating, N times each (default 10) after one warm-up of each, and prints both medians,
the ratio vacd/raw (target <= 1.10), and, to show where vacd's time goes, the median time
from the planner's decision to the payload and the median time run_cycle() took to return.

The zombie killer of each cycle scans /proc as it always does, but is only allowed to kill
this benchmark's own processes (others may be running containers as vacsngly). Needs root
and scripts/ci/setup-apptainer.sh. Run:

    python3 bench/apptainer.py [--repeat N] [--image DIR]
"""
from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import rawapptainer  # noqa: E402
from bench.sidebyside import ms_spread, ratio  # noqa: E402
from vac.backends.apptainer.backend import ApptainerBackend  # noqa: E402
from vac.config import load  # noqa: E402
from vac.cycle import planner  # noqa: E402
from vac.cycle.backendpool import BackendPool  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host import (
    cgroups,  # noqa: E402
    procs,  # noqa: E402
)
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine.directory import MachineDir  # noqa: E402
from vac.machine.slots import machine_name  # noqa: E402

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = {factory}
state_dir = {state}
singularity_user = {user}
host_processors = 1
overload_per_processor = 1000

[machinetype app]
machine_model = singularity
target_share = 1
root_image = {image}
user_data = {template}
"""


class Bench:
    def __init__(self, image: str):
        self.image = image
        self.top = tempfile.mkdtemp(prefix="vac-bench-", dir="/var/tmp")
        os.chmod(self.top, 0o755)
        self.tag = uuid.uuid4().hex[:8]
        self.parent = f"vac-bench-{self.tag}"
        self.template = os.path.join(self.top, "user_data")
        with open(self.template, "w") as f:
            f.write(f"#!/bin/sh\n{rawapptainer.PAYLOAD}\n")
        self.host = HostFacts.read()
        self.count = 0
        self.backend = None
        settings = self._factory()[1]().settings
        self.backend = ApptainerBackend(settings, cgroup_parent=self.parent)
        probe = self.backend.probe()
        if not probe.available:
            raise SystemExit(f"apptainer backend unavailable: {probe.reason}")
        self._only_our_processes()
        self.decided = 0.0
        self._note_decisions()

    def _note_decisions(self) -> None:
        """Note when the planner returns (instrumentation only: the plan is unchanged)."""
        plan = planner.plan

        def noted(*args, **kwargs):
            result = plan(*args, **kwargs)
            self.decided = time.perf_counter()
            return result

        planner.plan = noted

    def _only_our_processes(self) -> None:
        """Let the zombie killer scan /proc as usual but see only this benchmark's processes."""
        real = procs.pids_of_user
        prefix = f"/{self.parent}/"
        key = cgroups.membership_key(self.backend.hierarchy)

        def ours(uid, proc_root="/proc"):
            return [p for p in real(uid, proc_root)
                    if procs.cgroups_of(p, proc_root).get(key, "").startswith(prefix)]

        procs.pids_of_user = ours

    def _factory(self):
        """A fresh empty factory: (factory_name, config loader, state dir)."""
        self.count += 1
        name = f"b{self.tag}n{self.count}.example.com"
        state = os.path.join(self.top, f"state{self.count}")
        conf = os.path.join(self.top, f"vac{self.count}.conf")
        with open(conf, "w") as f:
            f.write(textwrap.dedent(CONF.format(factory=name, state=state, user=rawapptainer.USER,
                                                image=self.image, template=self.template)))
        return name, lambda: load.build(load.read_raw([conf]), self.host), state

    def vacd_once(self):
        """Seconds from run_cycle() until the payload's file appears, from the plan until
        then, and until run_cycle() returned."""
        factory_name, load, state = self._factory()
        factory = Factory(load, BackendPool(self.backend.settings,
                                            {"apptainer": self.backend}))
        name = machine_name(factory_name, 0)
        t0 = time.perf_counter()
        report = factory.run_cycle()
        cycle = time.perf_counter() - t0
        if report.created != [name]:
            raise SystemExit(f"the cycle did not create {name}: {report}")
        directory = MachineDir.for_slot(factory.config.settings.paths, name)
        rawapptainer.wait_for(directory.file("joboutputs/F"))
        seen = time.perf_counter()
        self.backend.destroy(name, directory)
        shutil.rmtree(state, ignore_errors=True)
        return seen - t0, seen - self.decided, cycle

    def raw_once(self) -> float:
        return rawapptainer.raw_exec(self.backend.binary(), self.image, self.top)

    def cleanup(self) -> None:
        rawapptainer.remove_cgroups(self.backend, self.parent)
        shutil.rmtree(self.top, ignore_errors=True)


def main() -> int:
    args = rawapptainer.command_line(__doc__.splitlines()[0])
    bench = Bench(args.image)
    times = {"vacd": [], "raw": []}
    planned, cycles = [], []
    try:
        bench.raw_once()  # warm the page cache and Python's imports for both sides
        bench.vacd_once()
        for _ in range(args.repeat):
            elapsed, since_plan, cycle = bench.vacd_once()
            times["vacd"].append(elapsed)
            planned.append(since_plan)
            cycles.append(cycle)
            times["raw"].append(bench.raw_once())
    finally:
        bench.cleanup()
    print(f"apptainer: decision to running payload, median of {args.repeat} alternating runs")
    for k in ("vacd", "raw"):
        print(f"  {k:5s} {ms_spread(times[k])}")
    print(f"  vacd from the plan until the payload runs {statistics.median(planned) * 1000:.1f}"
          f" ms; run_cycle() returned after {statistics.median(cycles) * 1000:.1f} ms (medians)")
    print(f"  ratio vacd/raw = {ratio(times['vacd'], times['raw']):.2f}   (target <= 1.10; "
          f"from the plan: {ratio(planned, times['raw']):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
