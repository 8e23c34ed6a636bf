# SPDX-License-Identifier: BSD-2-Clause
"""The Backend contract (vac/backends/base.py), checked on every backend by one suite.

Each backend has a harness (backendharness.py): two factories configured from vac.conf text and
machines created on the real path, vac.cycle.creation.create_machine. Machinetype `run` keeps
running, burning a little CPU, until destroyed; machinetype `exit` burns a little CPU and exits
with code 3: its CPU seconds and (where the engine has one) its exit code must be reported.

fake always runs; docker, podman, apptainer and libvirt need their engine (require_engine: a missing
engine is a failure under CI=true). One running machine per backend is shared by the
read-only checks (module scope: a libvirt guest costs seconds); every other check makes and
destroys its own. Teardown destroys what both factories list, then sweeps the engine for
anything left with this run's factory names, and removes the state directories.
"""
from __future__ import annotations

import os
import time
from typing import Callable

import pytest
from backendharness import GENEROUS, HARNESSES, Made
from testbed import require_engine

from vac.backends.base import ROOT_DISK, SCRATCH_DISK, Backend, DiskGrowth, MachineStatus, Probe
from vac.machine.directory import MachineDir, MachineState
from vac.machine.slots import machine_name, ordinal_of

# Slot ordinals of this suite: above the integration tests' (VNC port 5900 + ordinal).
RUNNING, OTHER, DESTROYED, TWICE, NEVER, NO_BACKEND, EXITING = 81, 82, 83, 84, 85, 86, 87

BACKENDS = [pytest.param("fake", id="fake"),
            pytest.param("docker", id="docker", marks=pytest.mark.docker),
            pytest.param("podman", id="podman", marks=pytest.mark.podman),
            pytest.param("podman-rootless", id="podman-rootless", marks=pytest.mark.podman),
            pytest.param("apptainer", id="apptainer",
                         marks=[pytest.mark.apptainer, pytest.mark.root]),
            pytest.param("libvirt", id="libvirt", marks=pytest.mark.libvirt)]


@pytest.fixture(scope="module", params=BACKENDS)
def harness(request):
    h = HARNESSES[request.param]()
    try:
        problem = h.problem()
        require_engine(h.NAME, not problem, problem)
        h.build()
        probe = h.backend.probe()
        require_engine(h.NAME, probe.available, probe.reason)
        h.prepare()
        yield h
    finally:
        h.cleanup()


@pytest.fixture(scope="module")
def running(harness):
    """One machine of this factory, running for the read-only checks."""
    made = harness.make("run", RUNNING)
    yield made
    harness.backend.destroy(made.name, made.directory)


def wait_for(backend: Backend, made: Made, done: Callable[[MachineState], bool],
             timeout: float) -> MachineStatus:
    """Poll status() until done(state) or the timeout; return the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = backend.status(made.name, made.directory)
        if done(status.state) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def settled(backend: Backend, made: Made) -> MachineStatus:
    """The status once the machine is past STARTING."""
    return wait_for(backend, made, lambda s: s is not MachineState.STARTING, GENEROUS)


def wait_for_cpu(backend: Backend, made: Made) -> MachineStatus:
    """The status once the machine reports some CPU seconds, or the last one at the deadline."""
    deadline = time.monotonic() + GENEROUS
    while True:
        status = backend.status(made.name, made.directory)
        if status.cpu_seconds > 0 or time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def listed(backend: Backend) -> dict:
    return {status.name: status for status in backend.list_machines()}


# The checks ---------------------------------------------------------------------------------

def test_probe_returns_a_probe_and_never_raises(harness):
    """The broken engine's probe ends within 3 times what the working one's takes here now
    (10 s at least), not at an engine timeout."""
    started = time.monotonic()
    probe = harness.backend.probe()
    working = time.monotonic() - started
    assert isinstance(probe, Probe) and probe.available, probe
    assert isinstance(probe.version, str) and probe.version
    started = time.monotonic()
    broken = harness.broken_backend().probe()
    took = time.monotonic() - started
    assert isinstance(broken, Probe)
    assert not broken.available and broken.reason, broken
    assert took < max(10.0, 3 * working), (took, working)


def test_create_then_running_with_the_id_list_machines_reports(harness, running):
    assert running.backend_id
    status = settled(harness.backend, running)
    assert status.name == running.name
    assert status.state is MachineState.RUNNING, status
    machines = listed(harness.backend)
    assert running.name in machines, sorted(machines)
    assert machines[running.name].backend_id == running.backend_id


def test_list_machines_shows_only_this_factorys_machines(harness, running):
    other = harness.make("run", OTHER, other=True)
    try:
        assert settled(harness.other_backend, other).state is MachineState.RUNNING
        ours = listed(harness.backend)
        assert running.name in ours
        assert other.name not in ours, f"{harness.factory} lists {other.name}"
        assert all(ordinal_of(harness.factory, name) >= 0 for name in ours), sorted(ours)
        theirs = listed(harness.other_backend)
        assert other.name in theirs and running.name not in theirs, sorted(theirs)
    finally:
        harness.other_backend.destroy(other.name, other.directory)


def test_cpu_seconds_never_decrease(harness, running):
    """The running payload burns CPU every second: its CPU seconds become positive (within a
    generous deadline) and never go down."""
    first = wait_for_cpu(harness.backend, running)
    assert first.cpu_seconds > 0, first
    seen = [first.cpu_seconds]
    for _ in range(5):
        seen.append(harness.backend.status(running.name, running.directory).cpu_seconds)
        time.sleep(0.3)
    assert all(later >= earlier for earlier, later in zip(seen, seen[1:])), seen


def test_a_new_backend_instance_adopts_the_running_machine(harness, running):
    fresh = harness.new_backend()
    for directory in (running.directory, None):
        status = fresh.status(running.name, directory)
        assert status.state is MachineState.RUNNING, (directory, status)
        assert status.backend_id == running.backend_id, (directory, status)
    machines = listed(fresh)
    assert running.name in machines and machines[running.name].backend_id == running.backend_id


def test_the_data_root_is_none_or_an_existing_directory_and_disk_files_are_well_formed(
        harness, running):
    """data_root(): None (the backend keeps nothing of its own on disk that grows) or an
    absolute path of an existing directory, the same when asked again; disk_growth() while a
    machine runs: files of live machines, in absolute existing directories, whole byte
    counts."""
    root = harness.backend.data_root()
    assert root is None or (os.path.isabs(root) and os.path.isdir(root)), root
    assert harness.new_backend().data_root() == root
    assert settled(harness.backend, running).state is MachineState.RUNNING
    for grown in harness.backend.disk_growth():
        assert isinstance(grown, DiskGrowth), grown
        assert os.path.isabs(grown.directory) and os.path.isdir(grown.directory), grown
        assert grown.size >= 0 and grown.allocated >= 0 and grown.room >= 0, grown
        assert grown.machine in listed(harness.backend), grown
        assert grown.kind in ("", ROOT_DISK, SCRATCH_DISK), grown


def test_destroy_then_shutdown(harness):
    made = harness.make("run", DESTROYED)
    try:
        assert settled(harness.backend, made).state is MachineState.RUNNING
        harness.backend.destroy(made.name, made.directory)
        assert harness.backend.status(made.name, made.directory).state is MachineState.SHUTDOWN
        assert harness.backend.status(made.name, None).state is MachineState.SHUTDOWN
        assert made.name not in listed(harness.backend)
    finally:
        harness.backend.destroy(made.name, made.directory)


def test_destroy_twice_and_destroy_of_a_never_created_machine_are_fine(harness):
    made = harness.make("run", TWICE)
    harness.backend.destroy(made.name, made.directory)
    harness.backend.destroy(made.name, made.directory)
    harness.backend.destroy(made.name, None)
    assert harness.backend.status(made.name, made.directory).state is MachineState.SHUTDOWN
    never = machine_name(harness.factory, NEVER)
    harness.backend.destroy(never, None)
    assert harness.backend.status(never, None).state is MachineState.SHUTDOWN
    # A directory whose creation stopped before backend.create (no backend record).
    name = machine_name(harness.factory, NO_BACKEND)
    directory = MachineDir.create(harness.config.settings.paths, int(time.time()), "run", name)
    harness.backend.destroy(name, directory)
    assert harness.backend.status(name, directory).state is MachineState.SHUTDOWN
    assert not {made.name, never, name} & set(listed(harness.backend))


def test_a_payload_that_exits_is_shutdown_and_collected(harness):
    made = harness.make("exit", EXITING)
    try:
        status = wait_for(harness.backend, made, lambda s: s is MachineState.SHUTDOWN,
                          harness.finish_timeout)
        assert status.state is MachineState.SHUTDOWN, status
        final = harness.backend.collect(made.name, made.directory)
        assert isinstance(final, MachineStatus)
        assert final.name == made.name and final.state is MachineState.SHUTDOWN, final
        assert final.exit_code == harness.EXIT_CODE, final
        assert final.cpu_seconds > 0, final
    finally:
        harness.backend.destroy(made.name, made.directory)
