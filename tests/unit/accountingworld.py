# SPDX-License-Identifier: BSD-2-Clause
"""A factory on the fake backend with one machinetype (alpha: 1000 s runs at 0.5 CPU, accounted
to a site), driven cycle by cycle on a hand-moved clock, with readers for the APEL archive and
outgoing queue. The `world` fixture (conftest.py) gives World bound to a test's directory."""
from __future__ import annotations

import os

from dirq.QueueSimple import QueueSimple
from fakeclock import T0, Clock
from fakefactory import factory_over

from vac.backends.fake import FakeBackend
from vac.config import load

CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
overload_per_processor = 100
host_processors = 2
{settings}

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
fizzle_seconds = 100
max_wallclock_seconds = 5000
accounting_fqan = /lhcb/Role=pilot
fake_run_seconds = 1000
fake_cpu_per_second = 0.5
fake_shutdown_message = 200 Success
"""


class World:
    """vac.conf in `tmp_path` with `settings` added to [settings]; the factory started at
    T0 - 10,000 on a clock at T0."""

    def __init__(self, tmp_path, host,
                 settings="gocdb_sitename = UKI-EXAMPLE\nhs06_per_processor = 10"):
        self.tmp_path = tmp_path
        self.host = host
        self.clock = Clock(T0)
        self.conf = tmp_path / "vac.conf"
        (tmp_path / "user_data").write_text("#!/bin/sh\n")
        self.write(settings)
        cfg = self.load()
        self.paths = cfg.settings.paths
        fake = FakeBackend(cfg.settings, clock=self.clock)
        self.factory = factory_over(self.load, fake, self.clock, cfg.settings)

    def write(self, settings):
        self.conf.write_text(CONF.format(state=self.tmp_path / "state", settings=settings,
                                         user_data=self.tmp_path / "user_data"))

    def load(self):
        return load.build(load.read_raw([str(self.conf)]), self.host)

    def run(self, seconds=0.0):
        """Move the clock by `seconds`, then run one cycle; its report."""
        self.clock.now += seconds
        return self.factory.run_cycle()

    def archived(self):
        """(day, file name, text) of every record in the APEL archive, in order."""
        found = []
        for day in sorted(os.listdir(self.paths.apel_archive)):
            for name in sorted(os.listdir(os.path.join(self.paths.apel_archive, day))):
                with open(os.path.join(self.paths.apel_archive, day, name)) as f:
                    found.append((day, name, f.read()))
        return found

    def queued(self):
        """The text of every message in the APEL outgoing queue."""
        q = QueueSimple(self.paths.apel_outgoing)
        texts = []
        for name in q:
            if q.lock(name):
                texts.append(q.get(name).decode())
                q.unlock(name)
        return texts


def fields(text):
    """An APEL record's fields, by name."""
    return dict(line.split(": ", 1) for line in text.splitlines()[1:] if ": " in line)
