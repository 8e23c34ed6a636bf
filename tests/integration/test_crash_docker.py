# SPDX-License-Identifier: BSD-2-Clause
"""vacd SIGKILLed on the real Docker engine (the crash suite).

(a) At random moments through more than 100 machine lifecycles, then a clean drain.
(b) Deterministically at every crash point between two steps of creation, finishing and destroy
    (vac.faults.POINTS, through VAC_TEST_CRASH_AT), then a restarted vacd and a drain.
After each: no container, cgroup parent or temp file left, no slot with two live machines, no
corrupt file, every machine finished with a coded shutdown_message, no payload of a machine the
engine had started killed as "could not finish creating".
"""
from __future__ import annotations

import os
import random
import re
import signal
import time
from typing import List

import pytest
from docker_engine import engine_ready
from dockerfactory import DockerFactory, machine_dirs
from vacd_process import cycles_logged, start_vacd, stop
from waiting import GENEROUS, wait_until, wait_while_alive

from vac import faults
from vac.backends.docker import cgroupparent
from vac.backends.docker.backend import CRASH_BEFORE_PARENT_REMOVAL, CRASH_BEFORE_RECORD
from vac.host.cgroups import Cgroups, host_path
from vac.machine.directory import read_slot_record

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FAST = ["--cycle-seconds", "0.3"]
RUNS_THEN_SUCCEEDS = "#!/bin/sh\nsleep 1\necho '200 Success' > $JOBOUTPUTS/shutdown_message\n"
SLEEPS = "#!/bin/sh\nexec sleep 300\n"
NO_EMBARGO = "backoff_seconds = 0\nfizzle_seconds = 0"
CODED = re.compile(r"\d{3} \S")


@pytest.fixture
def dock(tmp_path, make_config):
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    yield world
    world.remove_all()


def check_no_slot_has_two_live_machines(world: DockerFactory) -> None:
    live = {}
    for d in machine_dirs(world):
        if d.finished is None:
            assert d.name not in live, f"{d.name}: two unfinished machines {live[d.name]}, {d}"
            live[d.name] = d.path
    paths = world.load().settings.paths
    for name in os.listdir(paths.slots):
        if not name.startswith("."):
            assert read_slot_record(paths, name) is not None, f"corrupt slot record {name}"


def drain(world: DockerFactory, payload: str, slots: int, log: str) -> None:
    """Restart vacd with draining = yes and let every machine end, then stop it cleanly."""
    world.write(payload, slots=slots, extra_settings="draining = yes", extra_mt=NO_EMBARGO)
    vacd = start_vacd(world.config_file, log, FAST)
    try:
        done = wait_while_alive(lambda: not world.containers() and all(
            d.finished is not None for d in machine_dirs(world)), vacd, step=0.3)
        assert done, open(log).read()[-3000:]
    finally:
        stop(vacd, signal.SIGTERM)
    assert vacd.returncode == 0, open(log).read()[-3000:]


def parent_directories(world: DockerFactory) -> List[str]:
    """The cgroup directories of every controller's hierarchy that are a parent of one of this
    factory's machines, named by the machine directory (whatever backend.json says)."""
    cgroups = Cgroups()
    ours = {os.path.basename(d.path) for d in machine_dirs(world)}
    found = []
    for mount in cgroups.hierarchies.mounts():
        for parent in (cgroupparent.CGROUP_ROOT, cgroupparent.SLICE_DIRECTORY):
            directory = host_path(mount, parent)
            if directory is None or not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if any(name in (f"docker-{d}", c) for d in ours
                       for c in cgroupparent.candidates(d)):
                    found.append(os.path.join(directory, name))
    return sorted(found)


def check_clean_end(world: DockerFactory) -> None:
    """After a drain: nothing left anywhere, every file whole, every machine with a message."""
    assert world.containers() == {}
    state = world.load().settings.paths.state_dir
    assert parent_directories(world) == [], "cgroup parents leaked"
    for d in machine_dirs(world):
        assert d.finished is not None, d
        assert d.shutdown_message and CODED.match(d.shutdown_message), \
            f"{d.path}: {d.shutdown_message!r}"
        for rel in ("jobfeatures/job_id", "jobfeatures/allocated_cpu",
                    "machinefeatures/total_cpu"):
            # A file that is there is whole (atomic writes); a machine that started had them
            # all. One killed while its MJF was being written has only some: it never ran.
            if d.exists(rel) or d.started is not None:
                assert d.read(rel), f"{d.path}/{rel} missing or empty"
        if d.started is not None:
            float((d.read("heartbeat") or "0").split()[0])
    litter = [os.path.join(root, n) for root, _, files in os.walk(state) for n in files
              if n.startswith(".tmp-")]
    assert litter == []
    check_no_slot_has_two_live_machines(world)


def wait_recovered(world: DockerFactory, vacd, log: str) -> None:
    """The restarted vacd has recovered: every machine the kill left has finished, the slot
    has a machine made after the restart, and vacd has gone on cycling after that. Conditions,
    not a number of cycles in a time: a cycle of destroy and create took 8 s under TCG."""
    left = {d.path for d in machine_dirs(world)}

    def recovered() -> bool:
        dirs = machine_dirs(world)
        return all(d.finished is not None for d in dirs if d.path in left) and \
            any(d.path not in left for d in dirs)

    assert wait_while_alive(recovered, vacd, step=0.3), open(log).read()[-3000:]
    then = len(cycles_logged(log))
    assert wait_while_alive(lambda: len(cycles_logged(log)) >= then + 2, vacd), \
        open(log).read()[-3000:]


def test_random_sigkills_through_100_lifecycles_leave_nothing_behind(dock, tmp_path):
    slots = 6
    dock.write(RUNS_THEN_SUCCEEDS, slots=slots, extra_mt=NO_EMBARGO)
    rng = random.Random(int(os.environ.get("VAC_CRASH_SEED", "9")))
    kills, started = 0, time.monotonic()
    # Until 100 lifecycles however long they take (about 40 s here; a deadline only so that
    # a factory that stopped making machines ends the test).
    while len(machine_dirs(dock)) < 100 and time.monotonic() - started < 4 * GENEROUS:
        log = str(tmp_path / f"vacd-{kills}.log")
        vacd = start_vacd(dock.config_file, log, FAST)
        time.sleep(rng.uniform(0.4, 2.5))
        stop(vacd, signal.SIGKILL)
        kills += 1
        check_no_slot_has_two_live_machines(dock)
    lifecycles = len(machine_dirs(dock))
    assert lifecycles >= 100, f"only {lifecycles} lifecycles in {kills} kills"
    drain(dock, RUNS_THEN_SUCCEEDS, slots, str(tmp_path / "drain.log"))
    check_clean_end(dock)
    # A payload the engine had started is adopted, never killed as a failed creation.
    killed_payloads = [d for d in machine_dirs(dock)
                       if d.shutdown_message == "700 Vac could not finish creating the machine"
                       and d.read_backend_record().get("container_id")]
    assert killed_payloads == []
    adopted = sum(open(tmp_path / f"vacd-{k}.log").read().count("; adopted")
                  for k in range(kills))
    print(f"{lifecycles} lifecycles, {kills} SIGKILLs, {adopted} adoptions of cut creations, "
          f"in {time.monotonic() - started:.0f} s")


@pytest.mark.parametrize("point", faults.POINTS)
def test_a_kill_at_each_crash_point_is_recovered(dock, tmp_path, point):
    destroying = point.startswith("destroy:")
    payload = SLEEPS if destroying else RUNS_THEN_SUCCEEDS
    extra_mt = NO_EMBARGO + ("\nmax_wallclock_seconds = 2" if destroying else "")
    dock.write(payload, slots=1, extra_mt=extra_mt)
    first = str(tmp_path / "vacd-crash.log")
    vacd = start_vacd(dock.config_file, first, FAST, env={faults.CRASH_ENV: point})
    try:
        assert wait_until(lambda: vacd.poll() is not None, step=0.1), \
            open(first).read()[-3000:]
    finally:
        stop(vacd, signal.SIGKILL)
    assert vacd.returncode == -signal.SIGKILL, open(first).read()[-3000:]
    assert f"fault injection: SIGKILL at {point}" in open(first).read()
    check_no_slot_has_two_live_machines(dock)
    second = str(tmp_path / "vacd-after.log")
    vacd = start_vacd(dock.config_file, second, FAST)
    try:
        wait_recovered(dock, vacd, second)
    finally:
        stop(vacd, signal.SIGTERM)
    assert vacd.returncode == 0 and "Traceback" not in open(second).read(), \
        open(second).read()[-3000:]
    drain(dock, payload, 1, str(tmp_path / "drain.log"))
    check_clean_end(dock)
    first_machine = machine_dirs(dock)[0]
    if point in ("create:after-backend", "create:after-started"):
        # The engine had started the payload: it is adopted and runs to its own end.
        assert first_machine.shutdown_message == "200 Success", first_machine.path



def test_a_parent_no_record_names_is_released_after_kills_in_creation_and_destroy(dock,
                                                                                   tmp_path):
    """The chaos run's leak: vacd killed after the engine made the machine's cgroup parent and
    before backend.json named it, then (the machine adopted and ended) killed again between
    the container's removal and its parent's. The next vacd finds the parent by the machine
    directory's name, in every controller's hierarchy."""
    dock.write(RUNS_THEN_SUCCEEDS, slots=1, extra_mt=NO_EMBARGO)
    for n, point in enumerate((CRASH_BEFORE_RECORD, CRASH_BEFORE_PARENT_REMOVAL)):
        log = str(tmp_path / f"vacd-{n}.log")
        vacd = start_vacd(dock.config_file, log, FAST, env={faults.CRASH_ENV: point})
        try:
            assert wait_until(lambda: vacd.poll() is not None, step=0.1), \
                open(log).read()[-3000:]
        finally:
            stop(vacd, signal.SIGKILL)
        assert f"fault injection: SIGKILL at {point}" in open(log).read()
    first = machine_dirs(dock)[0]
    assert first.read_backend_record() == {} and first.finished is not None
    assert dock.containers() == {}
    assert parent_directories(dock) != []          # the window: a parent nothing names
    after = str(tmp_path / "vacd-after.log")
    vacd = start_vacd(dock.config_file, after, FAST)
    try:
        assert wait_while_alive(lambda: not any(
            p.endswith(os.path.basename(first.path)) for p in parent_directories(dock)),
            vacd, step=0.3), open(after).read()[-3000:]
    finally:
        stop(vacd, signal.SIGTERM)
    assert "removing cgroup parent" in open(after).read()
    drain(dock, RUNS_THEN_SUCCEEDS, 1, str(tmp_path / "drain.log"))
    check_clean_end(dock)
    assert first.shutdown_message == "200 Success", first.path
