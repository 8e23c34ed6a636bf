# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: Docker machines made through vacd's cycle against raw docker SDK runs.

(a) Per machine: an empty 1-slot factory (host_processors = 1) runs one Factory cycle; the
    time of its create step (create_machine: slot record, directory, MJF, user_data,
    DockerBackend.create) until the engine says the container is running, against
    `client.containers.run(detach=True)` of the same image and command until running.
    The two sides alternate (which goes first alternates too), after one untimed warm-up
    each; target: median ratio <= 1.10. The whole cycle's time is shown too.
(b) Fill: one cycle of an empty 32-slot factory (host_processors = 32; every container
    checked running; docker_parallel_creations at its default) against raw fills of the same
    32 containers with 1, 2, 4 and 8 concurrent containers.run calls, all in the same run;
    target: ratio to the best raw fill <= 1.15.

Containers are removed between runs, outside the timing, and at the end (by label). Needs a
running engine and the local image vac-test/busybox:1 (scripts/ci/setup-docker.sh). Run:

    python3 bench/docker.py [--repeat N] [--rounds N] [--slots N]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Dict, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
# This file is named docker.py: keep its directory off sys.path so `import docker` finds the
# SDK, not this script.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from bench import sidebyside  # noqa: E402
from bench.rawdocker import (  # noqa: E402
    ENGINE,
    IMAGE,
    USER_DATA,
    raw_fill,
    raw_run,
    until_running,
)
from vac.config import assemble  # noqa: E402
from vac.cycle.factory import Factory  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402

SPACE = "bench.example.com"
TARGET_ONE = 1.10
TARGET_FILL = 1.15
WIDTHS = (1, 2, 4, 8)
RUN = uuid.uuid4().hex[:6]
BENCH_LABEL = "vac.bench"
BENCHES: List[Bench] = []

CONF = """
[settings]
state_dir = {state}
vac_space = {space}
factory_name = {factory}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = 256
docker_url = {url}
{extra}

[machinetype bench]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
"""


class Bench:
    """One factory (a state dir and a config file) per benchmark, driven as vacd drives it."""

    extra = ""   # more [settings] lines (--parallel)

    def __init__(self, tmp: str, slots: int, tag: str):
        self.tmp = os.path.join(tmp, tag)
        self.state = os.path.join(self.tmp, "state")
        self.factory_name = f"b{RUN}{tag}.example.com"
        os.makedirs(self.tmp)
        template = os.path.join(self.tmp, "user_data")
        with open(template, "w") as f:
            f.write(USER_DATA)
        self.conf = os.path.join(self.tmp, "vac.conf")
        with open(self.conf, "w") as f:
            f.write(CONF.format(state=self.state, space=SPACE, factory=self.factory_name,
                                slots=slots, url=ENGINE, image=IMAGE, user_data=template,
                                extra=Bench.extra))
        self.host = HostFacts.read()
        self.factory = Factory(self._load)
        BENCHES.append(self)

    def _load(self):
        return assemble.load_config([self.conf], self.host, update=True, now=time.time())

    def cycle(self, api) -> Tuple[float, sidebyside.TimedCreations]:
        def running(_slot, created) -> None:
            until_running(api, created.backend_id)

        took, timed, _ = sidebyside.timed_cycle(self.factory, running)
        return took, timed

    def empty(self, api) -> None:
        """Remove this factory's containers (through the backend, which removes their cgroup
        parents too) and its state: the next cycle starts empty."""
        if self.factory.pool is not None:
            backend = self.factory.pool.get("docker")
            for machine in backend.list_machines():
                backend.destroy(machine.name, None)
        remove_label(api, f"vac.factory={self.factory_name}")
        shutil.rmtree(self.state, ignore_errors=True)


def remove_label(api, label: str) -> None:
    for c in api.containers(all=True, filters={"label": label}):
        api.remove_container(c["Id"], force=True)


def labelled_raw_run(client, api, name: str) -> float:
    return raw_run(client, api, name, {BENCH_LABEL: RUN})[0]


def per_machine(client, api, tmp: str, repeat: int) -> Tuple[List[float], List[float],
                                                              List[float]]:
    bench = Bench(tmp, 1, "one")
    create: List[float] = []
    cycle: List[float] = []
    raw: List[float] = []
    counter = [0]

    def ours() -> None:
        took, timed = bench.cycle(api)
        assert len(timed.times) == 1, "the 1-slot cycle did not create one machine"
        if counter[0]:
            create.append(timed.times[0])
            cycle.append(took)
        bench.empty(api)

    def theirs() -> None:
        took = labelled_raw_run(client, api, f"b{RUN}-raw-{counter[0]}")
        if counter[0]:
            raw.append(took)
        remove_label(api, f"{BENCH_LABEL}={RUN}")
        counter[0] += 1

    sidebyside.alternate(repeat + 1, ours, theirs)
    return create, cycle, raw


def fill(client, api, tmp: str, slots: int, rounds: int) -> Tuple[List[float], List[float],
                                                                  Dict[int, List[float]]]:
    ours_t: List[float] = []
    creates: List[float] = []
    raw_t: Dict[int, List[float]] = {w: [] for w in WIDTHS}
    benches = [Bench(tmp, slots, f"fill{r}") for r in range(rounds)]

    def ours() -> None:
        bench = benches[len(ours_t)]
        took, timed = bench.cycle(api)
        if len(timed.times) != slots:
            raise SystemExit(f"one cycle created {len(timed.times)} of {slots} machines")
        ours_t.append(took)
        creates.append(sum(timed.times))
        bench.empty(api)

    def theirs() -> None:
        for width in WIDTHS:
            names = [f"b{RUN}-fill-{width}-{len(raw_t[width])}-{i}" for i in range(slots)]
            raw_t[width].append(raw_fill(client, api, names, width, {BENCH_LABEL: RUN}))
            remove_label(api, f"{BENCH_LABEL}={RUN}")

    sidebyside.alternate(rounds, ours, theirs)
    return ours_t, creates, raw_t


def main() -> int:
    import docker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="per-machine pairs (20)")
    parser.add_argument("--rounds", type=int, default=2, help="fill pairs (2)")
    parser.add_argument("--slots", type=int, default=32, help="fill slots (32)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="docker_parallel_creations for vacd (default: its default)")
    args = parser.parse_args()
    if args.parallel:
        Bench.extra = f"docker_parallel_creations = {args.parallel}"
    client = docker.DockerClient(base_url=ENGINE, timeout=60)
    api = client.api
    try:
        api.inspect_image(IMAGE)
    except docker.errors.DockerException as e:
        print(f"engine or image {IMAGE} not usable: {e} (scripts/ci/setup-docker.sh)",
              file=sys.stderr)
        return 1
    version = api.version()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            create, cycle, raw = per_machine(client, api, tmp, args.repeat)
            fill_ours, fill_creates, fill_raw = fill(client, api, tmp, args.slots,
                                                     args.rounds)
    finally:
        remove_label(api, f"{BENCH_LABEL}={RUN}")
        for bench in BENCHES:
            bench.empty(api)
    one = sidebyside.ratio(create, raw)
    whole = sidebyside.ratio(cycle, raw)
    best = min(WIDTHS, key=lambda w: sorted(fill_raw[w])[len(fill_raw[w]) // 2])
    filled = sidebyside.ratio(fill_ours, fill_raw[best])
    print(f"engine {version.get('Version')} (API {version.get('ApiVersion')}), image {IMAGE}")
    print(f"\n(a) one machine, {args.repeat} runs each, alternating"
          f"{'median':>14}{'min':>11}{'max':>11}")
    print(f"  vacd create step until running         {sidebyside.ms(create)}")
    print(f"  vacd whole 1-slot cycle                {sidebyside.ms(cycle)}")
    print(f"  raw containers.run until running       {sidebyside.ms(raw)}")
    print(f"\n(b) fill {args.slots} slots, {args.rounds} rounds each, alternating"
          f"{'median':>9}{'min':>11}{'max':>11}")
    print(f"  vacd one cycle, {args.slots} machines running       {sidebyside.ms(fill_ours)}")
    print(f"    of which its {args.slots} create steps          {sidebyside.ms(fill_creates)}")
    for width in WIDTHS:
        print(f"  raw fill, {width} containers.run at once      {sidebyside.ms(fill_raw[width])}"
              + ("  <- best" if width == best else ""))
    ok_one, ok_fill = one <= TARGET_ONE, filled <= TARGET_FILL
    print(f"\nratio create step / raw run   {one:6.3f}  target <= {TARGET_ONE:.2f}: "
          f"{sidebyside.verdict(one, TARGET_ONE)}")
    print(f"ratio whole cycle / raw run   {whole:6.3f}  (shown, no target)")
    print(f"ratio fill cycle / best raw   {filled:6.3f}  target <= {TARGET_FILL:.2f}: "
          f"{sidebyside.verdict(filled, TARGET_FILL)}")
    return 0 if ok_one and ok_fill else 2


if __name__ == "__main__":
    sys.exit(main())
