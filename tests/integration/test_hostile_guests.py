# SPDX-License-Identifier: BSD-2-Clause
"""Hostile guests on the real engines: Docker and Apptainer payloads that turn their
joboutputs into a trap (symlinks to /etc/shadow and /, a FIFO, a directory, a 2 GB sparse file,
a 3,000-level tree, non-UTF-8 names, a thousand files, a symlinked heartbeat file) and exit.

The factory keeps cycling and refilling, reads nothing outside the machine directory (the
secret planted outside never shows up in anything Vac wrote), its memory stays bounded, and
each machine ends with a coded shutdown_message (Vac's own where the guest's cannot be read).
"""
from __future__ import annotations

import os
import re
import resource

import pytest
from apptainer_env import require_root, require_usable
from apptainer_world import World
from docker_engine import engine_ready
from dockerfactory import DockerFactory
from waiting import wait_until

from vac.machine import removal

CODED = re.compile(r"\d{3} \S")
SECRET = "vac-hostile-guest-secret-3f9a1c"

# Three trap sets; each then exits without a usable message.
SYMLINKS = "ln -s /etc/shadow shutdown_message; ln -s / heartbeat; ln -s {secret} stolen"
FIFO_SPARSE = ("mkfifo shutdown_message; truncate -s 2G big; touch \"$(printf 'bad\\377n')\"; "
               "i=0; while [ $i -lt 1000 ]; do : > f$i; i=$((i+1)); done")
DIRECTORY_DEEP = ("mkdir shutdown_message; ln -s ../../../../etc heartbeat; "
                  "i=0; while [ $i -lt 3000 ]; do mkdir d; cd d; i=$((i+1)); done")


def payload(*traps: str, secret: str) -> str:
    """A user_data script: slot N (by hostname) sets trap N, then exits 0."""
    cases = "".join(f"*-{n:02d}.*) {t} ;;\n" for n, t in enumerate(traps))
    return (f"#!/bin/sh\ncd \"$JOBOUTPUTS\"\ncase \"$(hostname)\" in\n{cases}esac\nexit 0\n"
            .replace("{secret}", secret))


HEARTBEAT = "heartbeat_file = heartbeat\nheartbeat_seconds = 0\nbackoff_seconds = 0\n" \
            "fizzle_seconds = 0"


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    return str(path)


def _nothing_outside_was_read(state: str) -> None:
    """The planted secret is in no regular file Vac wrote anywhere under the state dir."""
    for root, dirs, files in os.walk(state):
        dirs[:] = [d for d in dirs if d != "d"]       # the guest's deep tree holds nothing
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path) or not os.path.isfile(path) or \
                    os.path.getsize(path) > 1024 * 1024:
                continue
            with open(path, "rb") as f:
                assert SECRET.encode() not in f.read(), f"{path} holds what is outside"


def _remove_machines(state: str) -> None:
    """The guests' deep trees, which shutil.rmtree (and pytest's tmp cleanup) cannot remove."""
    machines = os.path.join(state, "machines")
    for name in os.listdir(machines) if os.path.isdir(machines) else []:
        if not name.startswith("."):
            removal.remove_tree(os.path.join(machines, name))
    if os.path.isdir(machines):
        removal.remove_retired(machines)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.docker
def test_hostile_docker_guests_end_coded_and_the_factory_cycles(tmp_path, make_config, secret):
    engine_ready()
    dock = DockerFactory(tmp_path, make_config)
    try:
        script = payload(SYMLINKS, FIFO_SPARSE, DIRECTORY_DEEP, secret=secret)
        dock.write(script, slots=3, extra_mt=HEARTBEAT)
        names = dock.slots(3)
        first = dock.cycle()
        assert sorted(first.created) == names
        rss = _rss_mb()
        dirs = {n: dock.dir(n) for n in names}
        assert wait_until(lambda: all(c["State"] == "exited"
                                      for c in dock.containers().values()))

        def finish_some() -> bool:
            report = dock.cycle()
            finished.update(report.finished)
            assert not [e for e in report.errors if "Traceback" in e]
            return len(finished) >= 3

        finished = set()
        wait_until(finish_some, step=0)
        assert finished == set(names)
        for name, d in dirs.items():
            assert d.finished is not None
            message = d.shutdown_message
            assert message and CODED.match(message), (name, message)
            assert message.startswith("700 Vac: machine's shutdown_message refused"), message
        dock.write(script, slots=3, extra_mt=HEARTBEAT, extra_settings="draining = yes")
        dock.cycle()
        _nothing_outside_was_read(dock.state)
        assert _rss_mb() - rss < 64
        with open(secret) as f:
            assert f.read().strip() == SECRET
    finally:
        dock.remove_all()
        _remove_machines(dock.state)


@pytest.mark.apptainer
@pytest.mark.root
def test_hostile_apptainer_guests_end_coded_and_the_factory_cycles(monkeypatch, tmp_path,
                                                                 secret):
    require_root()
    world = World(monkeypatch)
    try:
        require_usable(world.backend)
        world.write(payload(SYMLINKS + "; " + DIRECTORY_DEEP, secret=secret)
                    .split("#!/bin/sh\n", 1)[1])
        report = world.cycle()
        assert report.created == [world.name]
        d = world.dir()
        world.wait_until_shut_down()
        report = world.cycle()
        assert report.finished == [world.name]
        assert d.shutdown_message.startswith("700 Vac: machine's shutdown_message refused"), \
            d.shutdown_message
        # A second trap set in the same slot: FIFO, sparse file, odd names, many files.
        world.write(payload(FIFO_SPARSE, secret=secret).split("#!/bin/sh\n", 1)[1])
        def replaced() -> bool:
            world.cycle()
            return world.dir().path != d.path

        wait_until(replaced, step=0.3)
        second = world.dir()
        assert second.path != d.path
        world.wait_until_shut_down()
        world.cycle()
        assert second.finished is not None
        assert CODED.match(second.shutdown_message or ""), second.shutdown_message
        _nothing_outside_was_read(world.state)
    finally:
        _remove_machines(world.state)
        world.cleanup()
