# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: the idle cost of vacd managing 64 running Docker machines for 5 minutes with the
default cycle (60 s), beside a bare docker SDK process that only lists the containers every
minute for the same time. Both are measured from /proc: RSS at the end and peak,
CPU seconds used (utime + stime), as a share of one core. Targets: vacd RSS <= 60 MB, CPU <=
1 % of a core.

Run as root after scripts/ci/setup-docker.sh:  python3 bench/idle.py [--slots 64] [--minutes 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from bench.rawdocker import IMAGE  # noqa: E402

CONF = """
[settings]
vac_space = idle.example.com
factory_name = {factory}
state_dir = {state}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = 64

[machinetype idle]
machine_model = docker
root_image = docker://{image}
user_data = {template}
target_share = 1
"""
LISTER = ("import docker, time, sys\n"
          "api = docker.APIClient(timeout=60)\n"
          "end = time.monotonic() + float(sys.argv[1])\n"
          "while time.monotonic() < end:\n"
          "    api.containers(filters={'label': 'vac.factory=' + sys.argv[2]})\n"
          "    time.sleep(60)\n")
TICKS = os.sysconf("SC_CLK_TCK")


def usage(pid: int):
    """(CPU seconds, current RSS MB, peak RSS MB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    rss = peak = 0.0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    return cpu, rss, peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    top = tempfile.mkdtemp(prefix="vac-idle-", dir="/var/tmp")
    factory = f"i{uuid.uuid4().hex[:8]}.example.com"
    template, conf = os.path.join(top, "user_data"), os.path.join(top, "vac.conf")
    with open(template, "w") as f:
        f.write("#!/bin/sh\nexec sleep 3600\n")
    with open(conf, "w") as f:
        f.write(CONF.format(factory=factory, state=os.path.join(top, "s"), slots=args.slots,
                            image=IMAGE, template=template))
    log = open(os.path.join(top, "vacd.log"), "w")
    vacd = subprocess.Popen([sys.executable, "-m", "vac.daemon", "--config", conf,
                             "--foreground"], cwd=os.path.dirname(HERE), stdout=log, stderr=log)
    try:
        while subprocess.run(["docker", "ps", "-q", "--filter", f"label=vac.factory={factory}"],
                             capture_output=True, text=True).stdout.count("\n") < args.slots:
            time.sleep(1)
        time.sleep(5)                              # the fill is done: measure the idle time
        seconds = args.minutes * 60
        lister = subprocess.Popen([sys.executable, "-c", LISTER, str(seconds), factory])
        v0, l0 = usage(vacd.pid)[0], usage(lister.pid)[0]
        time.sleep(seconds)
        v1, l1 = usage(vacd.pid), usage(lister.pid)
        lister.wait(120)
    finally:
        vacd.send_signal(signal.SIGTERM)
        vacd.wait(60)
        log.close()
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=vac.factory={factory}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
    vcpu, lcpu = (v1[0] - v0) / seconds * 100, (l1[0] - l0) / seconds * 100
    print(f"{args.slots} running Docker machines, {args.minutes:g} minutes, default cycle")
    print(f"  vacd              RSS {v1[1]:6.1f} MB (peak {v1[2]:6.1f})   CPU {vcpu:5.2f} % of a "
          "core")
    print(f"  bare SDK lister   RSS {l1[1]:6.1f} MB (peak {l1[2]:6.1f})   CPU {lcpu:5.2f} % of a "
          "core")
    ok = v1[1] <= 60 and vcpu <= 1.0
    print(f"  targets RSS <= 60 MB, CPU <= 1 %: {'ok' if ok else 'OVER TARGET'}")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
