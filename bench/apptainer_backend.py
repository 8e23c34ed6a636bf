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

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vac import cgroupmachine, config, mjf  # noqa: E402
from vac.backends.apptainer import ApptainerBackend  # noqa: E402
from vac.backends.base import MachineSpec  # noqa: E402
from vac.hostinfo import HostFacts  # noqa: E402
from vac.machine import MachineDir, SlotRecord, write_slot_record  # noqa: E402
from vac.slots import Slot, machine_name  # noqa: E402

USER = "vacsngly"
PAYLOAD = "touch /tmp/joboutputs/F; sleep 5"


def wait_for(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.001)


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
                singularity_user = {USER}
                [machinetype app]
                machine_model = apptainer
                target_share = 1
                root_image = {image}
                user_data = /dev/null
                container_command = /bin/sh /user_data
                """))
        self.cfg = config.build(config.read_raw([conf]), HostFacts.read())
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
        directory.write("user_data", f"#!/bin/sh\n{PAYLOAD}\n", mode=0o755)
        return MachineSpec(name=name, machinetype=mt, settings=self.cfg.settings,
                           slot=Slot(self.count, name), processors=1,
                           memory_mb=self.cfg.settings.mb_per_processor, created=now,
                           shutdown_time=now + 3600, uuid=str(uuid.uuid4()), directory=directory)

    def backend_once(self) -> float:
        spec = self.spec()
        target = spec.directory.file("joboutputs/F")
        t0 = time.perf_counter()
        self.backend.create(spec)
        wait_for(target)
        elapsed = time.perf_counter() - t0
        self.backend.destroy(spec.name, spec.directory)
        return elapsed

    def raw_once(self) -> float:
        out = tempfile.mkdtemp(prefix="raw-", dir=self.state)
        shutil.chown(out, USER, USER)
        target = os.path.join(out, "F")
        argv = ["runuser", "-u", USER, "--", self.backend.binary(), "exec", "--contain",
                "--bind", f"{out}:/tmp/joboutputs", self.image, "/bin/sh", "-c", PAYLOAD]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd="/tmp", start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(target)
        elapsed = time.perf_counter() - t0
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return elapsed

    def cleanup(self) -> None:
        hierarchy = self.backend.hierarchy
        for child in cgroupmachine.list_children(hierarchy, ("",), self.parent):
            cg = cgroupmachine.MachineCgroup(hierarchy, child, self.parent)
            cg.kill()
            cg.remove()
        for root in set(hierarchy.mounts.values()):
            try:
                os.rmdir(os.path.join(root, self.parent))
            except FileNotFoundError:
                pass
        shutil.rmtree(self.state, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--image", default="/var/lib/vac-test/busybox-sandbox")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (vacd starts containers as root, then drops to the user)")
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
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"apptainer start until the payload runs, median of {args.repeat} alternating runs")
    for k in ("backend", "raw"):
        print(f"  {k:8s} {med[k] * 1000:7.1f} ms   (min {min(times[k]) * 1000:.1f}, "
              f"max {max(times[k]) * 1000:.1f})")
    ratio = med["backend"] / med["raw"]
    print(f"  ratio backend/raw = {ratio:.2f}   (target <= 1.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
