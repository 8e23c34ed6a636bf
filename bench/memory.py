# SPDX-License-Identifier: BSD-2-Clause
"""Memory: peak RSS of vacd filling and managing 32 Docker slots, side by side with a bare
Python process that starts the same 32 containers with the docker SDK.

Each side runs in a child process of its own so getrusage(RUSAGE_CHILDREN) gives its peak.
Run as root with the engine up and vac-test/busybox:1 present (scripts/ci/setup-docker.sh).
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap

SLOTS = 32
IMAGE = "vac-test/busybox:1"
SPACE = "membench.example.com"

RAW = textwrap.dedent(f"""
    import docker
    client = docker.from_env(timeout=60)
    for n in range({SLOTS}):
        client.containers.run("{IMAGE}", ["sleep", "30"], detach=True,
                              labels={{"vac.bench": "memory"}}, name=f"membench-raw-{{n}}")
""")

CONF = """
[settings]
vac_space = {space}
factory_name = memfactory.example.com
state_dir = {state}
host_processors = {slots}
overload_per_processor = 1000

[machinetype mem]
machine_model = docker
root_image = docker://{image}
user_data = {template}
container_command = /user_data
target_share = 1
"""


MEASURE = ("import resource, subprocess, sys; "
           "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, "
           "stderr=subprocess.DEVNULL, timeout=600); "
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def peak_rss_kb(argv) -> int:
    """Peak RSS (KiB) of argv, measured by a fresh parent so nothing else is counted."""
    out = subprocess.run([sys.executable, "-c", MEASURE, *argv], check=True,
                         capture_output=True, text=True, timeout=660)
    return int(out.stdout.split()[-1])


def cleanup() -> None:
    for label in ("vac.bench=memory", f"vac.space={SPACE}"):
        ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"label={label}"],
                             capture_output=True, text=True).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def main() -> int:
    cleanup()
    with tempfile.TemporaryDirectory() as tmp:
        template = os.path.join(tmp, "user_data")
        with open(template, "w") as f:
            f.write("#!/bin/sh\nsleep 30\n")
        conf = os.path.join(tmp, "vac.conf")
        with open(conf, "w") as f:
            f.write(CONF.format(space=SPACE, state=os.path.join(tmp, "state"), slots=SLOTS,
                                image=IMAGE, template=template))
        try:
            raw = peak_rss_kb([sys.executable, "-c", RAW])
            cleanup()
            ours = peak_rss_kb([sys.executable, "-m", "vac.daemon", "--config", conf,
                                "--foreground", "--cycles", "3", "--cycle-seconds", "1",
                                "--log-file", "/dev/null"])
            running = len(subprocess.run(["docker", "ps", "-q", "--filter",
                                          f"label=vac.space={SPACE}"],
                                         capture_output=True, text=True).stdout.split())
        finally:
            cleanup()
    print(f"peak RSS filling {SLOTS} Docker slots (KiB)")
    print(f"  raw docker SDK process, {SLOTS} containers.run      {raw:8d}")
    print(f"  vacd, 3 cycles (fill, then manage {SLOTS} running)  {ours:8d}")
    print(f"  ratio vacd/raw = {ours / raw:.2f}   ({running} of vacd's containers were running)")
    return 0 if running == SLOTS else 1


if __name__ == "__main__":
    sys.exit(main())
