# SPDX-License-Identifier: BSD-2-Clause
"""vacd SIGKILLed at random moments with real Apptainer machines (the crash suite).

A real vacd process runs 1-processor machines as the non-root singularity_user and is killed
again and again through more than 100 lifecycles; the machines outlive each vacd, the next one
adopts them (pid + start time), then a clean drain. Afterwards no process of the user is left
in this factory's cgroups, no machine cgroup is left, no temp file, no slot holds two live
machines, and every machine ended with a coded shutdown_message.

The vacd here runs the Singularity zombie killer over every process of the user, as a real
factory does: run this test where no one else runs Apptainer machines as that user (CI runs
tests one at a time).
"""
from __future__ import annotations

import os
import random
import re
import signal
import time

import pytest
from apptainer_space import Space
from vacd_process import start_vacd, stop
from waiting import GENEROUS, wait_while_alive

from vac.host import procs
from vac.machine.directory import read_slot_record

pytestmark = [pytest.mark.apptainer, pytest.mark.root, pytest.mark.slow]

CODED = re.compile(r"\d{3} \S")
FAST = ["--cycle-seconds", "0.3"]


def check_no_slot_has_two_live_machines(space: Space) -> None:
    live = {}
    for d in space.dirs():
        if d.finished is None:
            assert d.name not in live, f"{d.name}: two unfinished machines"
            live[d.name] = d.path
    slots = os.path.join(space.state, "slots")
    paths = space.backend().settings.paths
    for name in os.listdir(slots) if os.path.isdir(slots) else []:
        if not name.startswith("."):
            assert read_slot_record(paths, name) is not None, f"corrupt slot record {name}"


def test_random_sigkills_with_apptainer_machines_leave_nothing_behind(space):
    rng = random.Random(int(os.environ.get("VAC_CRASH_SEED", "5")))
    kills, started = 0, time.monotonic()
    # Until 100 lifecycles however long they take (about 35 s here; a deadline only so that
    # a factory that stopped making machines ends the test).
    while len(space.dirs()) < 100 and time.monotonic() - started < 4 * GENEROUS:
        vacd = start_vacd(space.conf, os.path.join(space.state, f"vacd-{kills}.log"), FAST)
        time.sleep(rng.uniform(0.4, 2.5))
        stop(vacd, signal.SIGKILL)
        kills += 1
        check_no_slot_has_two_live_machines(space)
    lifecycles = len(space.dirs())
    assert lifecycles >= 100, f"only {lifecycles} lifecycles in {kills} kills"
    space.write(draining=True)
    log = os.path.join(space.state, "drain.log")
    vacd = start_vacd(space.conf, log, FAST)
    backend = space.backend()
    try:
        assert wait_while_alive(lambda: all(d.finished is not None for d in space.dirs())
                                and not space.machine_cgroups(backend), vacd, step=0.3), \
            open(log).read()[-3000:]
    finally:
        stop(vacd, signal.SIGTERM)
    assert vacd.returncode == 0, open(log).read()[-3000:]
    for d in space.dirs():
        assert d.shutdown_message and CODED.match(d.shutdown_message), \
            f"{d.path}: {d.shutdown_message!r}\n{space.story(d)}"
        pid = d.read_backend_record().get("pid")
        if pid:
            info = procs.read(int(pid))
            assert info is None or not info.alive or \
                info.start_time != d.read_backend_record().get("start_time"), \
                f"{d.name}: its process {pid} is still alive"
    litter = [os.path.join(root, n) for root, _, files in os.walk(space.state) for n in files
              if n.startswith(".tmp-")]
    assert litter == []
    killed_payloads = [d for d in space.dirs() if d.shutdown_message ==
                       "700 Vac could not finish creating the machine" and
                       d.read_backend_record().get("pid")]
    assert killed_payloads == []
    print(f"{lifecycles} Apptainer lifecycles, {kills} SIGKILLs, "
          f"in {time.monotonic() - started:.0f} s")
