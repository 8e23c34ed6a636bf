# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: the cost of a container's scratch, made and removed, against the plain
bind directory a machine had before: median seconds to make and to remove, for sizes of 1, 40
and 320 GB (sparse: the size costs no space),. Root
only (loop mounts). Run:

    python3 bench/scratch.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vac.machine import scratch  # noqa: E402
from vac.machine.directory import MachineDir  # noqa: E402
from vac.paths import Paths  # noqa: E402

GB = 10 ** 9


def _one(state: str, directory: MachineDir, size: int) -> Tuple[float, float]:
    start = time.perf_counter()
    scratch.create(state, directory, size)
    made = time.perf_counter() - start
    start = time.perf_counter()
    scratch.remove(state, os.path.basename(directory.path))
    return made, time.perf_counter() - start


def _bind(state: str) -> Tuple[float, float]:
    start = time.perf_counter()
    path = tempfile.mkdtemp(prefix="_scratch", dir=state)
    os.chmod(path, 0o755)
    made = time.perf_counter() - start
    start = time.perf_counter()
    shutil.rmtree(path)
    return made, time.perf_counter() - start


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/scratch.py needs root (loop mounts)", file=sys.stderr)
        return 1
    state = tempfile.mkdtemp(prefix="vac-bench-scratch-", dir="/var/tmp")
    try:
        paths = Paths(state)
        paths.ensure()
        directory = MachineDir.create(paths, int(time.time()), "bench", "bench-00.example.com")
        os.makedirs(directory.file("jobfeatures"), exist_ok=True)
        runs = [_bind(state) for _ in range(args.repeat)]
        print(f"plain bind dir     make {statistics.median(r[0] for r in runs) * 1e3:7.2f} ms"
              f"  remove {statistics.median(r[1] for r in runs) * 1e3:7.2f} ms")
        for gb in (1, 40, 320):
            runs = [_one(state, directory, gb * GB) for _ in range(args.repeat)]
            print(f"loop ext4 {gb:4d} GB make {statistics.median(r[0] for r in runs) * 1e3:7.2f}"
                  f" ms  remove {statistics.median(r[1] for r in runs) * 1e3:7.2f} ms")
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
