# SPDX-License-Identifier: BSD-2-Clause
"""Factories on the fake backend with live VacQuery responders on loopback addresses, for the
space tests: each has its own state directory, config, clock and Responder thread."""
from __future__ import annotations

import random
import socket
from typing import Callable, Dict, List, Optional, Tuple

from vac.backends.fake import FakeBackend
from vac.config import load
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory
from vac.host.facts import HostFacts
from vac.space.census import SpacePoll
from vac.space.responder import Responder

SPACE = "space.example.com"
CONF = """
[settings]
vac_space = {space}
factory_name = {name}
factories = {factories}
state_dir = {state}
enable_fake_backend = true
overload_per_processor = 100
host_processors = {slots}
udp_timeout_seconds = {timeout}
vacquery_port = {port}
vacquery_address = {address}

[machinetype alpha]
machine_model = fake
target_share = {alpha}
fizzle_seconds = 100
backoff_seconds = 1000
max_wallclock_seconds = 100000
fake_run_seconds = {run}
fake_shutdown_message = {message}

[machinetype beta]
machine_model = fake
target_share = {beta}
fizzle_seconds = 100
backoff_seconds = 1000
max_wallclock_seconds = 100000
fake_run_seconds = 100000
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class SpaceFactory:
    """One factory: config file, fake backend, Factory with the space poll, Responder."""

    def __init__(self, tmp, name: str, address: str, port: int, names: List[str],
                 clock: Clock, slots: int = 3, alpha: float = 1, beta: float = 0,
                 run: float = 100000, message: str = "200 Success", timeout: float = 2.0,
                 resolver: Optional[Callable] = None):
        self.name, self.address, self.port, self.clock = name, address, port, clock
        self.conf = tmp / f"{name}.conf"
        self.values = dict(space=SPACE, name=name, factories=" ".join(names),
                           state=tmp / name, slots=slots, timeout=timeout, port=port,
                           address=address, alpha=alpha, beta=beta, run=run, message=message)
        self.write()
        self.host = HostFacts(fqdn=name, processors=slots)
        settings = self.load().settings
        self.fake = FakeBackend(settings, clock=clock)
        self.pool = BackendPool(settings, {"fake": self.fake})
        self.poll = SpacePoll(query=_with_resolver(resolver))
        self.factory = Factory(self.load, self.pool, clock=clock,
                               loadavg=lambda: (0.0, 0.0, 0.0), rng=random.Random(1),
                               space_census=self.poll)
        self.factory.started = clock.now - 10_000
        self.responder = Responder(lambda: self.factory.config or self.load(), clock=clock)

    def write(self, **changes) -> None:
        self.values.update(changes)
        self.conf.write_text(CONF.format(**self.values))

    def load(self):
        return load.build(load.read_raw([str(self.conf)]), self.host)

    def start(self) -> None:
        self.responder.start()
        assert self.responder.bound.wait(10), f"{self.name}: responder did not bind"

    def stop(self) -> None:
        self.responder.stop()


def _with_resolver(resolver):
    from vac.space import client

    def query(*args, **kw):
        kw.setdefault("resolver", resolver)
        return client.query(*args, **kw)
    return query


def loopback_resolver(table: Dict[str, str]) -> Callable[[str, int], Optional[Tuple[str, int]]]:
    return lambda name, port: (table[name], port) if name in table else None
