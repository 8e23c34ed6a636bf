# SPDX-License-Identifier: BSD-2-Clause
"""The raw side of the Apptainer benchmarks, their command line and their cgroup cleanup.

raw_exec() is what the backend is compared with: `runuser -u vacsngly -- apptainer exec
--contain --bind D:/tmp/joboutputs IMAGE /bin/sh -c PAYLOAD`, timed until the payload's first
action (touching D/F) is visible on the host, as the vacd side is.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time

from vac.host import cgroupmachine

USER = "vacsngly"
PAYLOAD = "touch /tmp/joboutputs/F; sleep 5"
IMAGE = "/var/lib/vac-test/busybox-sandbox"


def command_line(description: str) -> argparse.Namespace:
    """--repeat N (10) and --image DIR; exits unless run as root."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--image", default=IMAGE)
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (vacd starts containers as root, then drops to the user)")
    return args


def wait_for(path: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.001)


def raw_exec(binary: str, image: str, top: str) -> float:
    """Seconds until the raw exec's payload has touched F in a fresh directory under top
    (removed afterwards, outside the timing)."""
    out = tempfile.mkdtemp(prefix="raw-", dir=top)
    shutil.chown(out, USER, USER)
    target = os.path.join(out, "F")
    argv = ["runuser", "-u", USER, "--", binary, "exec", "--contain",
            "--bind", f"{out}:/tmp/joboutputs", image, "/bin/sh", "-c", PAYLOAD]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd="/tmp", start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(target)
    elapsed = time.perf_counter() - t0
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    shutil.rmtree(out, ignore_errors=True)
    return elapsed


def remove_cgroups(backend, parent: str) -> None:
    """Kill and remove every cgroup under the benchmark's cgroup parent, reap the backend's
    children, then remove the parent from every hierarchy."""
    hierarchy = backend.hierarchy
    for child in cgroupmachine.list_children(hierarchy, ("",), parent):
        cg = cgroupmachine.MachineCgroup(hierarchy, child, parent)
        cg.kill()
        cg.remove()
    for proc in backend._children.values():
        proc.wait(timeout=5)
    for root in set(hierarchy.mounts.values()):
        try:
            os.rmdir(os.path.join(root, parent))
        except FileNotFoundError:
            pass
