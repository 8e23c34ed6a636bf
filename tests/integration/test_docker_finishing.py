# SPDX-License-Identifier: BSD-2-Clause
"""Finishing collects before it destroys, on the real Docker engine.

A container the factory ends for its wall time keeps its console.log (collect saves the
engine's log before the single destroy removes the container), and a container OOM-killed
after the factory last saw it running ends with the OOM message, not the factory's own.
"""
from __future__ import annotations

import time

import pytest
from docker_engine import engine_ready, gone
from dockerfactory import MT, DockerFactory
from waiting import wait_until

from vac.cycle.finishing import Ending, finish_machine

pytestmark = [pytest.mark.docker]

CHATTY_SLEEPER = "#!/bin/sh\necho hello-from-the-console\necho second line >&2\nexec sleep 300\n"
# Runs (and is seen running), then grows past its 16 MiB limit once the test says so.
LATE_OOM = ("#!/bin/sh\necho before-oom\n"
            "while [ ! -e \"$JOBOUTPUTS/go\" ]; do sleep 0.2; done\n"
            "head -c 300m /dev/zero | tail\nexit 0\n")
OOM_MESSAGE = "700 Vac: container killed by the OOM killer (memory limit 16 MiB)"


@pytest.fixture
def dock(tmp_path, make_config):
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    yield world
    world.remove_all()


def test_a_container_ended_for_its_wall_time_keeps_its_console_log(dock):
    dock.write(CHATTY_SLEEPER, slots=1, extra_mt="max_wallclock_seconds = 3")
    name = dock.slot(0)
    assert dock.cycle().created == [name]
    d = dock.dir(name)
    container = d.read_backend_record()["container_id"]
    assert wait_until(lambda: time.time() > d.shutdown_time + 1)
    report = dock.cycle()
    assert report.destroyed == [name] and report.finished == [name], report.errors
    assert d.finished is not None and d.shutdown_message == "100 Shutdown time reached"
    console = d.read("console.log")
    assert "hello-from-the-console" in console and "second line" in console
    assert gone(container)


def test_an_oom_kill_after_the_last_observation_is_the_machines_outcome(dock):
    dock.write(LATE_OOM, slots=1, mb=16)
    name = dock.slot(0)
    assert dock.cycle().created == [name]
    d = dock.dir(name)
    container = d.read_backend_record()["container_id"]
    assert dock.cycle().finished == []                 # observed running
    # Between two cycles the payload is OOM-killed. The factory, which last saw it running,
    # ends it (here: as for its wall time): what the cycle's _apply does with a Destroy.
    d.write("joboutputs/go", "")
    assert wait_until(lambda: dock.containers()[name]["State"] == "exited"), dock.containers()
    config = dock.load()
    backend = dock.factory.pool.for_model("docker")
    done = finish_machine(config.settings.paths, d, config.machinetypes[MT], backend,
                          time.time(), Ending("100 Shutdown time reached", "wall time"))
    assert done.destroy_error is None and done.final is not None and done.final.oom_killed
    assert d.shutdown_message == OOM_MESSAGE
    assert "before-oom" in d.read("console.log")
    assert d.finished is not None and gone(container)
