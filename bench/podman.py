# SPDX-License-Identifier: BSD-2-Clause
"""Benchmark: PodmanBackend.create against the raw calls of the same rootful Podman.

Three ways to start the same image and command (a shell that execs `sleep`), each timed until
the engine says the container is running:

    ours     PodmanBackend.create() (docker SDK on Podman's Docker-compatible API) with a
             machine directory prepared beforehand (MJF, user_data)
    compat   the docker SDK's `client.containers.run(detach=True)` on the same socket
    libpod   Podman's own REST API (POST /libpod/containers/create, then .../start) over the
             socket with http.client: what the `podman` PyPI package would send

(a) per machine: the three alternate (the order rotates), one untimed warm-up each;
(b) fill: --slots containers at once, `podman_parallel_creations` (--parallel) creations in
    flight for ours and the same width of raw compat runs.
Containers are removed between runs, outside the timing. Needs the API socket and the image
vac-test/busybox:1 (scripts/ci/setup-podman.sh). Run:

    python3 bench/podman.py [--repeat N] [--slots N] [--parallel N] [--rootless USER]

With --rootless USER the same against that user's rootless Podman (its socket, podman_user =
USER: ours in the user namespace nomap, the raw calls in the user's default one).
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List

HERE = os.path.dirname(os.path.abspath(__file__))
# bench/docker.py would shadow the docker SDK: keep this directory off sys.path.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
sys.path.insert(0, os.path.dirname(HERE))

from bench import sidebyside  # noqa: E402
from bench.docker_backend import prepare  # noqa: E402
from bench.rawdocker import IMAGE, RAW_COMMAND, raw_run, until_running  # noqa: E402
from vac.backends.podman.backend import PodmanBackend  # noqa: E402
from vac.config import load, model  # noqa: E402
from vac.host.facts import HostFacts  # noqa: E402
from vac.paths import Paths  # noqa: E402

SOCKET = "/run/podman/podman.sock"
ENGINE = f"unix://{SOCKET}"
FACTORY = f"bench{uuid.uuid4().hex[:6]}.example.com"
LIBPOD = "/v4.0.0/libpod"

CONF = """
[settings]
state_dir = {state}
vac_space = bench.example.com
factory_name = {factory}
mb_per_processor = 256
podman_url = {url}
podman_parallel_creations = {parallel}
{rootless}

[machinetype bench]
machine_model = podman
root_image = docker://{image}
target_share = 1
"""


class UnixConnection(http.client.HTTPConnection):
    """HTTP over the API's UNIX socket."""

    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def libpod_call(method: str, url: str, body=None) -> bytes:
    conn = UnixConnection(SOCKET)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, LIBPOD + url, body=data,
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        text = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {url}: {response.status} {text[:200]!r}")
        return text
    finally:
        conn.close()


def libpod_run(api, name: str) -> float:
    start = time.perf_counter()
    made = json.loads(libpod_call("POST", "/containers/create", {
        "image": IMAGE, "command": RAW_COMMAND, "name": name,
        "labels": {"vac.bench": FACTORY}}))
    libpod_call("POST", f"/containers/{made['Id']}/start")
    until_running(api, made["Id"])
    return time.perf_counter() - start


def load_config(tmp: str, state: str, parallel: int, user: str = "") -> model.Config:
    path = os.path.join(tmp, "vac.conf")
    with open(path, "w") as f:
        f.write(CONF.format(state=state, factory=FACTORY, url=ENGINE, image=IMAGE,
                            parallel=parallel, rootless=f"podman_user = {user}" if user else ""))
    return load.build(load.read_raw([path]), HostFacts(fqdn=FACTORY, processors=64))


def remove_bench(api) -> None:
    for label in (f"vac.factory={FACTORY}", f"vac.bench={FACTORY}"):
        for c in api.containers(all=True, filters={"label": label}):
            api.remove_container(c["Id"], force=True)


def per_machine(backend, config, client, api, repeat: int) -> List[List[float]]:
    created, count = int(time.time()), [0]

    def ours() -> float:
        i = count[0] = count[0] + 1
        spec = prepare(config, 1 + i % 90, created + i)
        start = time.perf_counter()
        until_running(api, backend.create(spec))
        took = time.perf_counter() - start
        backend.destroy(spec.name, spec.directory)
        return took

    def compat() -> float:
        took, container = raw_run(client, api, f"{FACTORY}-c{uuid.uuid4().hex[:6]}",
                                  {"vac.bench": FACTORY})
        container.remove(force=True)
        return took

    def libpod() -> float:
        name = f"{FACTORY}-l{uuid.uuid4().hex[:6]}"
        took = libpod_run(api, name)
        api.remove_container(name, force=True)
        return took

    sides: List[Callable[[], float]] = [ours, compat, libpod]
    times: List[List[float]] = [[], [], []]
    for i in range(repeat + 1):
        order = [(i + k) % 3 for k in range(3)]
        for k in order:
            took = sides[k]()
            if i > 0:
                times[k].append(took)
    return times


def fill(backend, config, client, api, slots: int, width: int) -> List[float]:
    created = int(time.time()) + 1000
    specs = [prepare(config, 100 + n, created) for n in range(slots)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=width) as pool:
        ids = list(pool.map(backend.create, specs))
    for container_id in ids:
        until_running(api, container_id)
    ours = time.perf_counter() - start
    for spec in specs:
        backend.destroy(spec.name, spec.directory)
    names = [f"{FACTORY}-f{n}" for n in range(slots)]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=width) as pool:
        list(pool.map(lambda n: raw_run(client, api, n, {"vac.bench": FACTORY}), names))
    raw = time.perf_counter() - start
    remove_bench(api)
    return [ours, raw]


def main() -> int:
    import docker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--rootless", metavar="USER", default="",
                        help="the rootless Podman of this user instead of the rootful one")
    args = parser.parse_args()
    if args.rootless:
        import pwd

        global SOCKET, ENGINE
        SOCKET = f"/run/user/{pwd.getpwnam(args.rootless).pw_uid}/podman/podman.sock"
        ENGINE = f"unix://{SOCKET}"
    client = docker.DockerClient(base_url=ENGINE, timeout=120)
    api = client.api
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        os.chmod(tmp, 0o755)       # a rootless user and its mapped root reach the binds
        state = os.path.join(tmp, "state")
        Paths(state).ensure()
        config = load_config(tmp, state, args.parallel, args.rootless)
        backend = PodmanBackend(config.settings)
        probe = backend.probe()
        if not probe.available:
            print(f"podman backend unavailable: {probe.reason}", file=sys.stderr)
            return 1
        try:
            times = per_machine(backend, config, client, api, args.repeat)
            filled = fill(backend, config, client, api, args.slots, args.parallel)
        finally:
            remove_bench(api)
    print(f"engine {probe.version}{' rootless as ' + args.rootless if args.rootless else ''}, "
          f"image {IMAGE}, {args.repeat} runs each, rotating")
    print(f"{'create until running':28}{'median':>10}{'min':>10}{'max':>10}")
    for label, values in zip(("PodmanBackend.create", "compat containers.run",
                              "libpod create+start"), times):
        print(f"{label:28}{sidebyside.ms(values, 8)}")
    print(f"ratio ours/compat {sidebyside.ratio(times[0], times[1]):.3f}, "
          f"ours/libpod {sidebyside.ratio(times[0], times[2]):.3f}")
    print(f"fill of {args.slots} slots, {args.parallel} at once: ours {filled[0]:.2f} s, "
          f"raw compat runs {filled[1]:.2f} s (ratio {filled[0] / filled[1]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
