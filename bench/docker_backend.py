# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: per-machine overhead of DockerBackend.create against a raw docker SDK run.

Both sides start the same image and the same command (a shell that execs `sleep`) and are
timed until the engine says the container is running: DockerBackend.create() with a machine
directory prepared beforehand (MJF, user_data) against `client.containers.run(detach=True)`.
They alternate (which goes first alternates too), after one untimed warm-up each; containers
are removed between runs, outside the timing. Needs a running engine and the local image
vac-test/busybox:1 (scripts/ci/setup-docker.sh). Run:

    python3 bench/docker_backend.py [--repeat N]

Prints both medians and their ratio side by side; the target is a ratio of at most 1.10.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
import uuid
from typing import Callable, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/docker.py would shadow the docker SDK: keep this directory off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from bench import sidebyside  # noqa: E402
from bench.rawdocker import ENGINE, IMAGE, USER_DATA, raw_run, until_running  # noqa: E402
from vac.backends.base import MachineSpec  # noqa: E402
from vac.backends.docker.backend import DockerBackend  # noqa: E402
from vac.config import load, model  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.machine import mjf  # noqa: E402
from vac.machine.directory import MachineDir  # noqa: E402
from vac.machine.slots import Slot, machine_name  # noqa: E402
from vac.paths import Paths  # noqa: E402

TARGET = 1.10
FACTORY = f"bench{uuid.uuid4().hex[:6]}.example.com"

CONF = """
[settings]
state_dir = {state}
vac_space = bench.example.com
factory_name = {factory}
mb_per_processor = 256
docker_url = {url}

[machinetype bench]
machine_model = docker
root_image = docker://{image}
target_share = 1
"""


def load_config(tmp: str, state: str) -> model.Config:
    path = os.path.join(tmp, "vac.conf")
    with open(path, "w") as f:
        f.write(CONF.format(state=state, factory=FACTORY, url=ENGINE, image=IMAGE))
    return load.build(load.read_raw([path]), HostFacts(fqdn=FACTORY, processors=64))


def prepare(config: model.Config, ordinal: int, created: int) -> MachineSpec:
    """A machine directory as the factory prepares it before backend.create()."""
    settings, mt = config.settings, config.machinetypes["bench"]
    name = machine_name(settings.factory_name, ordinal)
    directory = MachineDir.create(settings.paths, created, mt.name, name)
    mjf.write_mjf(directory, mjf.MjfContext(settings=settings, machinetype=mt, processors=1,
                                            shutdown_time=created + 3600, now=created))
    directory.write("user_data", USER_DATA, mode=0o644)
    return MachineSpec(name=name, machinetype=mt, settings=settings, slot=Slot(ordinal, name),
                       processors=1, memory_mb=settings.mb_per_processor, created=created,
                       shutdown_time=created + 3600, uuid=str(uuid.uuid4()),
                       directory=directory)


def run_ours(backend: DockerBackend, api, spec: MachineSpec) -> Tuple[float, Callable]:
    start = time.perf_counter()
    container_id = backend.create(spec)
    until_running(api, container_id)
    elapsed = time.perf_counter() - start
    return elapsed, lambda: backend.destroy(spec.name, spec.directory)


def run_raw(client, api, name: str) -> Tuple[float, Callable]:
    elapsed, container = raw_run(client, api, name)
    return elapsed, lambda: container.remove(force=True)


def main() -> int:
    import docker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    client = docker.DockerClient(base_url=ENGINE, timeout=60)
    api = client.api
    with tempfile.TemporaryDirectory() as tmp:
        state = os.path.join(tmp, "state")
        Paths(state).ensure()
        config = load_config(tmp, state)
        backend = DockerBackend(config.settings)
        probe = backend.probe()
        if not probe.available:
            print(f"docker backend unavailable: {probe.reason}", file=sys.stderr)
            return 1
        created = int(time.time())
        ours_runs, raw_runs = itertools.count(), itertools.count()

        def ours_once() -> float:
            i = next(ours_runs)
            took, cleanup = run_ours(backend, api, prepare(config, 1 + i % 90, created + i))
            cleanup()
            return took

        def raw_once() -> float:
            took, cleanup = run_raw(client, api, f"{FACTORY}-raw-{next(raw_runs)}")
            cleanup()
            return took

        ours, raw = sidebyside.timed_alternately(args.repeat + 1, ours_once, raw_once,
                                                 warmups=1)
        result = sidebyside.ratio(ours, raw)
        print(f"engine {probe.version}, image {IMAGE}, {args.repeat} runs each, alternating")
        print(f"{'':28}{'median':>10}{'min':>10}{'max':>10}")
        for label, values in (("DockerBackend.create", ours), ("raw containers.run", raw)):
            print(f"{label:28}{sidebyside.ms(values, 8)}")
        print(f"ratio ours/raw (medians)    {result:>8.3f}   target <= {TARGET:.2f}: "
              f"{sidebyside.verdict(result, TARGET)}")
    return 0 if result <= TARGET else 2


if __name__ == "__main__":
    sys.exit(main())
