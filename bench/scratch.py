# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: the cost of a container's scratch, made and removed, against the plain
bind directory a machine had before: median milliseconds to make and to remove, for sizes of
1, 40 and 320 GB (thin: the size costs no space), with each mechanism this host has: loop
(ext4 in a sparse file, loop-mounted) and, given a volume group with a thin pool,
lvm-thin (ext4 on a thin LV). Root only. Run:

    python3 bench/scratch.py [--repeat N] [--volume-group VG]

In the cgroup v2 guest (its kernel has device-mapper; this machine's has not), which makes a
volume group on a loop device for the run (tests/integration/loopvg.py):

    VAC_V2_LOGDIR=/var/log/vac-v2-bench bash scripts/ci/run-v2-tests.sh \
        tests/integration/test_lvm.py bench/scratch.py -k side_by_side -s
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vac.host import lvm  # noqa: E402
from vac.machine import scratch, scratchlv  # noqa: E402
from vac.machine.directory import MachineDir  # noqa: E402
from vac.paths import Paths  # noqa: E402

GB = 10 ** 9


def _one(state: str, directory: MachineDir, size: int,
         maker: Optional[scratch.Maker]) -> Tuple[float, float]:
    start = time.perf_counter()
    scratch.create(state, directory, size, maker)
    made = time.perf_counter() - start
    start = time.perf_counter()
    scratch.remove(state, os.path.basename(directory.path), maker)
    return made, time.perf_counter() - start


def _bind(state: str) -> Tuple[float, float]:
    start = time.perf_counter()
    path = tempfile.mkdtemp(prefix="_scratch", dir=state)
    os.chmod(path, 0o755)
    made = time.perf_counter() - start
    start = time.perf_counter()
    shutil.rmtree(path)
    return made, time.perf_counter() - start


def _makers(volume_group: Optional[str]) -> List[Tuple[str, Optional[scratch.Maker]]]:
    makers: List[Tuple[str, Optional[scratch.Maker]]] = [("loop ext4", None)]
    if volume_group:
        pool = lvm.thin_pool(lvm.read_group(volume_group))
        if not pool:
            raise SystemExit(f"bench/scratch.py: {volume_group} has no thin pool for Vac")
        makers.append(("lvm-thin ext4", scratchlv.ThinVolume(volume_group, pool)))
    return makers


def run(repeat: int, volume_group: Optional[str]) -> List[str]:
    """The benchmark's lines: the plain bind directory, then each mechanism and size."""
    state = tempfile.mkdtemp(prefix="vac-bench-scratch-", dir="/var/tmp")
    lines = []
    try:
        paths = Paths(state)
        paths.ensure()
        directory = MachineDir.create(paths, int(time.time()), "bench", "bench-00.example.com")
        os.makedirs(directory.file("jobfeatures"), exist_ok=True)
        runs = [_bind(state) for _ in range(repeat)]
        lines.append(f"plain bind dir          make {_ms(runs, 0)} ms  remove {_ms(runs, 1)} ms")
        for label, maker in _makers(volume_group):
            for gb in (1, 40, 320):
                runs = [_one(state, directory, gb * GB, maker) for _ in range(repeat)]
                lines.append(f"{label:13s} {gb:4d} GB make {_ms(runs, 0)} ms  "
                             f"remove {_ms(runs, 1)} ms")
    finally:
        shutil.rmtree(state, ignore_errors=True)
    return lines


def _ms(runs: List[Tuple[float, float]], which: int) -> str:
    return f"{statistics.median(r[which] for r in runs) * 1e3:7.2f}"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--volume-group", help="a volume group with a thin pool for Vac: "
                                               "lvm-thin is measured too")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/scratch.py needs root (mounts)", file=sys.stderr)
        return 1
    print("\n".join(run(args.repeat, args.volume_group)))
    return 0


def test_scratch_side_by_side():
    """The guest's run (see the docstring): a volume group of its own, every mechanism."""
    from loopvg import loop_volume_group

    with loop_volume_group(pv_gib=400, pool="1g") as vg:
        print("\n" + "\n".join(run(5, vg)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
