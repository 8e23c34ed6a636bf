# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: ApptainerBackend.create() until the payload runs, against a raw apptainer exec.

Both sides run the busybox sandbox image as vacsngly and time from just before the start until
the payload's first action (touching a file in a bound directory) is visible on the host:

    backend  ApptainerBackend.create(spec) on a machine directory prepared as the factory does
             (cgroup with limits, setuid in a preexec step, MJF/joboutputs/user_data binds,
             --workdir, --hostname, --env), payload `touch /tmp/joboutputs/F; sleep 5`
    raw      runuser -u vacsngly -- apptainer exec --contain --bind D:/tmp/joboutputs IMAGE
             /bin/sh -c 'touch /tmp/joboutputs/F; sleep 5'

alternating, N times each (default 10), and prints both medians and their ratio (target <= 1.10).
Needs root and scripts/ci/setup-apptainer.sh. Run:

    python3 bench/apptainer_backend.py [--repeat N] [--image DIR]
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import textwrap
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import rawapptainer  # noqa: E402
from bench.sidebyside import ms_spread, ratio  # noqa: E402
from vac.backends.apptainer.backend import ApptainerBackend  # noqa: E402
from vac.backends.base import MachineSpec  # noqa: E402
from vac.config import load  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine import mjf  # noqa: E402
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record  # noqa: E402
from vac.machine.slots import Slot, machine_name  # noqa: E402


class Bench:
    def __init__(self, image: str):
        self.image = image
        self.state = tempfile.mkdtemp(prefix="vac-bench-", dir="/var/tmp")
        os.chmod(self.state, 0o755)
        self.tag = uuid.uuid4().hex[:8]
        self.factory = f"b{self.tag}.example.com"
        conf = os.path.join(self.state, "vac.conf")
        with open(conf, "w") as f:
            f.write(textwrap.dedent(f"""
                [settings]
                vac_space = vac01.example.com
                factory_name = {self.factory}
                state_dir = {self.state}
                singularity_user = {rawapptainer.USER}
                [machinetype app]
                machine_model = apptainer
                target_share = 1
                root_image = {image}
                user_data = /dev/null
                container_command = /bin/sh /user_data
                """))
        self.cfg = load.build(load.read_raw([conf]), HostFacts.read())
        self.cfg.settings.paths.ensure()
        self.parent = f"vac-bench-{self.tag}"
        self.backend = ApptainerBackend(self.cfg.settings, cgroup_parent=self.parent)
        probe = self.backend.probe()
        if not probe.available:
            raise SystemExit(f"apptainer backend unavailable: {probe.reason}")
        self.count = 0

    def spec(self) -> MachineSpec:
        self.count += 1
        name = machine_name(self.factory, self.count)
        mt = self.cfg.machinetypes["app"]
        paths = self.cfg.settings.paths
        now = int(time.time())
        write_slot_record(paths, name, SlotRecord(now, "app", "apptainer"))
        directory = MachineDir.create(paths, now, "app", name)
        mjf.write_mjf(directory, mjf.MjfContext(settings=self.cfg.settings, machinetype=mt,
                                                processors=1, shutdown_time=now + 3600,
                                                now=now))
        directory.write("user_data", f"#!/bin/sh\n{rawapptainer.PAYLOAD}\n", mode=0o755)
        return MachineSpec(name=name, machinetype=mt, settings=self.cfg.settings,
                           slot=Slot(self.count, name), processors=1,
                           memory_mb=self.cfg.settings.mb_per_processor, created=now,
                           shutdown_time=now + 3600, uuid=str(uuid.uuid4()), directory=directory)

    def backend_once(self) -> float:
        spec = self.spec()
        target = spec.directory.file("joboutputs/F")
        t0 = time.perf_counter()
        self.backend.create(spec)
        rawapptainer.wait_for(target)
        elapsed = time.perf_counter() - t0
        self.backend.destroy(spec.name, spec.directory)
        return elapsed

    def raw_once(self) -> float:
        return rawapptainer.raw_exec(self.backend.binary(), self.image, self.state)

    def cleanup(self) -> None:
        rawapptainer.remove_cgroups(self.backend, self.parent)
        shutil.rmtree(self.state, ignore_errors=True)


def main() -> int:
    args = rawapptainer.command_line(__doc__.splitlines()[0])
    bench = Bench(args.image)
    times = {"backend": [], "raw": []}
    try:
        bench.raw_once()  # warm the page cache for both sides
        bench.backend_once()
        for _ in range(args.repeat):
            times["backend"].append(bench.backend_once())
            times["raw"].append(bench.raw_once())
    finally:
        bench.cleanup()
    print(f"apptainer start until the payload runs, median of {args.repeat} alternating runs")
    for k in ("backend", "raw"):
        print(f"  {k:8s} {ms_spread(times[k])}")
    print(f"  ratio backend/raw = {ratio(times['backend'], times['raw']):.2f}   (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
