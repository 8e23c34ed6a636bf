# SPDX-License-Identifier: BSD-2-Clause
"""The engines really stopped and restarted under the factory cycle: dockerd SIGTERMed with
containers running ("engine stopped mid-run"), libvirtd killed with a VM running ("libvirtd
down => VM machinetypes wait, vacd lives"). test_docker_cycle.py and test_libvirt_cycle.py
simulate these outages (a socket proxy, a bogus URI); here the daemons go away for real.

While an engine is down, a cycle must not crash, must not finish or destroy its machines and
must not create; the machinetypes wait, saying why. Once the engine is back (the CI setup
script starts it), management resumes: Docker containers, stopped by the engine's shutdown
(no live-restore), are finished exactly once with their outcome and their slots refilled
unless the outcome backs the machinetype off; the QEMU process of a VM outlives libvirtd and
its domain is adopted again.

The engines are shared, so these tests run only under CI=true or VAC_TEST_RESTART_ENGINES=1,
and each one restores its engine in teardown (engine_daemons.restore) before its machines
are cleaned up. Factories, state directories and cleanup are those of the cycle tests.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from typing import Dict, List, Tuple

import engine_daemons as engines
import pytest
from docker_engine import engine_ready, sdk
from dockerfactory import DockerFactory
from dockerfactory import MT as DOCKER_MT
from libvirtfactory import URI, LibvirtFactory, engine_problem
from libvirtfactory import MT as VM_MT
from testbed import require_engine
from waiting import Stopwatch, wait_until

from vac import planfile
from vac.cycle.factory import CycleReport
from vac.host.cgroups import Cgroups
from vac.machine.finishes import last_outcome

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not engines.allowed(), reason=engines.SKIP_REASON)]

# Ready once the TERM trap is set; on SIGTERM (the engine stopping) says so and exits 0.
GRACEFUL = r"""#!/bin/sh
cd "$JOBOUTPUTS"
trap 'echo "100 SIGTERM in ##user_data_machine_hostname##" > shutdown_message; exit 0' TERM
sleep 100000 &
echo ready > ready
wait
"""
# Ignores SIGTERM (pid 1 without a handler): the engine kills it after its stop timeout.
IGNORING = '#!/bin/sh\ncd "$JOBOUTPUTS"\necho ready > ready\nexec sleep 100000\n'
# Prints a numbered tick on the serial console every second.
TICKER = '#!/bin/sh\ni=0\nwhile :; do i=$((i + 1)); echo "VAC-TICK $i"; sleep 1; done\n'
FIZZLE = re.compile(r"300 Vac detects fizzle after \d+ seconds")
# The Docker API timeout of these tests: far above what an outage cycle may take (bounded by
# the managed cycles measured before the outage), so a cycle that waited for it fails.
DOCKER_TIMEOUT = 120
LIBVIRT_CONNECT = 10.0      # LibvirtBackend's connect_timeout


def nothing_done(report: CycleReport) -> None:
    assert report.created == report.finished == report.destroyed == [], report
    assert report.zombies == report.errors == [], report


def plan_of(paths) -> planfile.PlanRecord:
    record = planfile.read(paths.plan)
    assert record is not None, f"no readable {paths.plan}"
    return record


def outage_bound(managed: Stopwatch, floor: float, timeout: float) -> float:
    """How long a cycle without the engine may take: 3 times the slowest managed cycle of this
    run (15 s at least), which must stay below the engine's timeout, or the bound proves
    nothing (a cycle that waited for the timeout would pass)."""
    bound = managed.bound(3, floor)
    assert bound < timeout, f"cycles take {managed.slowest():.1f} s here: too slow to tell " \
                            f"a cycle that gave up at once from one that waited {timeout} s"
    return bound


# Docker ------------------------------------------------------------------------------------

@pytest.fixture
def dock(tmp_path, make_config):
    """A DockerFactory (dockerfactory) whose engine is restored before its cleanup."""
    engine_ready()
    world = DockerFactory(tmp_path, make_config)
    try:
        yield world
    finally:
        try:
            engines.restore("docker")
        finally:
            world.remove_all()


def start_two(dock: DockerFactory, payload: str,
              managed: Stopwatch) -> Tuple[List[str], Dict[str, str]]:
    """Three slots, two processors: two running containers, ready and with a heartbeat, and
    one idle slot. `managed` times the cycles with the engine up."""
    dock.write(payload, slots=3, extra_settings="total_processors = 2", timeout=DOCKER_TIMEOUT)
    names = dock.slots(3)
    first = managed.time(dock.cycle)
    assert first.created == names[:2] and first.errors == [], first
    assert "total_processors" in first.idle[names[2]], first.idle
    assert wait_until(lambda: all(dock.dir(n).exists("joboutputs/ready") for n in names[:2])), \
        [dock.dir(n).path for n in names[:2]]
    ids = {n: c["Id"] for n, c in dock.containers().items()}
    assert sorted(ids) == names[:2]
    assert all(c["State"] == "running" for c in dock.containers().values())
    nothing_done(managed.time(dock.cycle))              # heartbeats
    assert sdk().info().get("LiveRestoreEnabled") is False, \
        "these tests expect an engine without live-restore (scripts/ci/setup-docker.sh)"
    return names, ids


def docker_outage_cycle(dock: DockerFactory, names: List[str], caplog,
                        managed: Stopwatch) -> None:
    """A cycle without the engine leaves both machines alone and creates nothing, and does
    not wait for the engine's timeout."""
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        started = time.monotonic()
        report = dock.cycle()
        took = time.monotonic() - started
        assert took < outage_bound(managed, 15, DOCKER_TIMEOUT), took
    nothing_done(report)
    assert list(report.idle) == [names[2]], report.idle
    assert "backend docker unavailable: Docker engine not reachable" in report.idle[names[2]]
    assert f"({DOCKER_MT} waiting)" in report.idle[names[2]]
    assert "backend docker unavailable this cycle" in caplog.text
    summary = plan_of(dock.load().settings.paths)
    assert sorted(summary.unmanaged) == names[:2], summary
    assert all("Docker engine not reachable" in why for why in summary.unmanaged.values())
    for name in names[:2]:
        assert dock.dir(name).finished is None
    assert not os.path.exists(dock.load().settings.paths.finish_record(DOCKER_MT))
    assert not os.path.exists(dock.load().settings.paths.slot_record(names[2]))


@pytest.mark.docker
@pytest.mark.parametrize("payload", ["graceful", "ignoring"])
def test_dockerd_stopped_mid_run_then_restarted(dock, payload, caplog):
    graceful = payload == "graceful"
    managed = Stopwatch()
    names, ids = start_two(dock, GRACEFUL if graceful else IGNORING, managed)
    old = {n: dock.dir(n) for n in names[:2]}
    parents = [d.read_backend_record()["cgroup_parent"] for d in old.values()]
    beats = {n: d.heartbeat_time for n, d in old.items()}
    assert None not in beats.values()
    stopped = engines.stop("docker")
    docker_outage_cycle(dock, names, caplog, managed)    # dockerd may still be stopping them
    engines.wait_exited("docker", stopped)
    docker_outage_cycle(dock, names, caplog, managed)    # dockerd gone
    assert {n: d.heartbeat_time for n, d in old.items()} == beats
    engines.restore("docker")
    assert set(engines.pids("docker")).isdisjoint(stopped)
    after = dock.containers()                      # no live-restore: the engine stopped them
    assert {n: c["Id"] for n, c in after.items()} == ids
    for c in after.values():
        state = sdk().inspect_container(c["Id"])["State"]
        assert state["Status"] == "exited", state
        assert state["ExitCode"] == (0 if graceful else 137), state
    with caplog.at_level(logging.INFO):
        caplog.clear()
        report = dock.cycle()
        assert report.finished == names[:2], report
        assert report.destroyed == report.zombies == report.errors == [], report
        finished = {n: d.finished for n, d in old.items()}
        for _ in range(2):                               # finished once, never again
            nothing_done(dock.cycle())
    for name, d in old.items():
        assert caplog.text.count(f"{name} finished ({DOCKER_MT})") == 1, caplog.text
        assert d.finished is not None and d.finished == finished[name]
        if graceful:
            assert d.shutdown_message == f"100 SIGTERM in {name}"
        else:
            assert FIZZLE.fullmatch(d.shutdown_message or ""), d.shutdown_message
    for parent in filter(None, parents):
        assert Cgroups().cpu_seconds(parent) is None, f"{parent} left behind"
    check_docker_outcome(dock, names, ids, old, report, graceful)


def check_docker_outcome(dock: DockerFactory, names: List[str], ids: Dict[str, str], old,
                         report: CycleReport, graceful: bool) -> None:
    """finishes/ names the old machine whose outcome was reported last (both were created in
    the same cycle and end the same way, so any of those reported at the latest time);
    refilled with new running containers, or backing off with none left."""
    paths = dock.load().settings.paths
    reported = {d.name: min(t for t in (d.shutdown_message_time, d.finished) if t is not None)
                for d in old.values()}
    last = [d for d in old.values() if reported[d.name] == max(reported.values())]
    with open(paths.finish_record(DOCKER_MT)) as f:
        record = f.read().split()
    assert record in [[str(d.created), DOCKER_MT, d.name] for d in last], (record, reported)
    named = next(d for d in last if d.name == record[2])
    outcome = last_outcome(paths, DOCKER_MT)
    assert outcome is not None and outcome.message == named.shutdown_message
    now = dock.containers()                    # only this factory's label: no leak, no zombie
    for d in old.values():
        assert d.finished is not None and os.path.isdir(d.path)
    if graceful:
        assert report.created == names[:2], report
        assert sorted(now) == names[:2]
        assert set(c["Id"] for c in now.values()).isdisjoint(ids.values())
        assert all(c["State"] == "running" for c in now.values())
        for name in names[:2]:
            fresh = dock.dir(name)
            assert fresh.path != old[name].path and fresh.finished is None
            assert fresh.read_backend_record()["container_id"] == now[name]["Id"]
        assert "total_processors" in report.idle[names[2]], report.idle
        assert plan_of(paths).unmanaged == {}
    else:                                       # two fizzles: the machinetype backs off
        assert report.created == [] and now == {}, (report, now)
        assert sorted(report.idle) == names
        assert all(f"backoff of {DOCKER_MT} until" in r for r in report.idle.values())


# libvirt -----------------------------------------------------------------------------------

@pytest.fixture
def lv():
    """A LibvirtFactory (libvirtfactory) whose libvirtd is restored before its cleanup."""
    problem = engine_problem()
    require_engine("libvirt", not problem, problem)
    top = tempfile.mkdtemp(prefix="vac-engine-restarts-", dir="/var/tmp")
    os.chmod(top, 0o755)           # QEMU runs as libvirt-qemu and must reach the files
    world = LibvirtFactory(top)
    try:
        yield world
    finally:
        try:
            engines.restore("libvirt")
        finally:
            try:
                reconnect(world)
                world.cleanup()
            finally:
                shutil.rmtree(top, ignore_errors=True)


def reconnect(lv: LibvirtFactory) -> None:
    """The test's own connection does not survive libvirtd: open a new one."""
    import libvirt

    try:
        lv.conn.close()
    except libvirt.libvirtError:
        pass
    lv.conn = libvirt.open(URI)


def ticks(lv: LibvirtFactory, name: str) -> int:
    found = re.findall(r"VAC-TICK (\d+)", lv.console(name))
    return int(found[-1]) if found else 0


def qemu_pid(name: str) -> int:
    with open(f"/run/libvirt/qemu/{name}.pid") as f:
        return int(f.read().strip())


def running_vm(lv: LibvirtFactory, payload: str,
               managed: Stopwatch) -> Tuple[List[str], dict]:
    """One VM in slot 0 (total_processors 1), slot 1 idle; what identifies the VM.
    `managed` times the cycles with libvirtd up."""
    lv.write(payload, slots=2)
    names = [lv.slot(0), lv.slot(1)]
    first = managed.time(lv.cycle)
    assert first.created == [names[0]] and first.errors == [], first
    dom = lv.domains()[names[0]]
    return names, {"uuid": dom.UUIDString(), "id": dom.ID(), "pid": qemu_pid(names[0])}


def libvirt_outage_cycle(lv: LibvirtFactory, names: List[str], managed: Stopwatch) -> str:
    """A cycle without libvirtd leaves the VM alone, having waited for one connection
    attempt at most (LIBVIRT_CONNECT s) besides twice a managed cycle's time (5 s at least);
    returns the waiting reason."""
    started = time.monotonic()
    report = lv.cycle()
    took = time.monotonic() - started
    assert took < LIBVIRT_CONNECT + managed.bound(2, 5), (took, managed.samples)
    nothing_done(report)
    assert list(report.idle) == [names[1]], report.idle
    reason = report.idle[names[1]]
    assert "backend libvirt unavailable: " in reason and f"({VM_MT} waiting)" in reason
    summary = plan_of(lv.load().settings.paths)
    assert list(summary.unmanaged) == [names[0]], summary
    assert "libvirt" in summary.unmanaged[names[0]]
    d = lv.dir(names[0])
    assert d.finished is None and d.shutdown_message is None
    return reason


def check_adopted(lv: LibvirtFactory, names: List[str], vm: dict) -> None:
    import libvirt

    found = lv.domains()
    assert list(found) == [names[0]], found            # nothing duplicated, nothing lost
    dom = found[names[0]]
    assert dom.UUIDString() == vm["uuid"] and dom.ID() == vm["id"]
    assert dom.info()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert qemu_pid(names[0]) == vm["pid"] and engines.alive(vm["pid"])
    assert lv.dir(names[0]).job_id.lower() == vm["uuid"].lower()


@pytest.mark.libvirt
def test_libvirtd_killed_vm_waits_then_is_adopted(lv):
    managed = Stopwatch()
    names, vm = running_vm(lv, TICKER, managed)
    d = lv.dir(names[0])
    assert wait_until(lambda: ticks(lv, names[0]) >= 3), lv.console(names[0])
    nothing_done(managed.time(lv.cycle))
    beat = d.heartbeat_time
    assert beat is not None
    stopped = engines.stop("libvirt")
    engines.wait_exited("libvirt", stopped)
    before = ticks(lv, names[0])
    reasons = [libvirt_outage_cycle(lv, names, managed)]
    time.sleep(1.5)
    reasons.append(libvirt_outage_cycle(lv, names, managed))
    assert "is libvirtd running?" in reasons[-1], reasons   # a fresh connection is refused
    assert d.heartbeat_time == beat
    assert engines.alive(vm["pid"]), "QEMU ended with libvirtd"
    assert wait_until(lambda: ticks(lv, names[0]) >= before + 3), \
        "the guest stopped ticking while libvirtd was down"
    engines.restore("libvirt")
    assert set(engines.pids("libvirt")).isdisjoint(stopped)
    reconnect(lv)
    report = lv.cycle()
    nothing_done(report)
    assert "unavailable" not in report.idle[names[1]], report.idle
    assert plan_of(lv.load().settings.paths).unmanaged == {}
    check_adopted(lv, names, vm)
    assert d.finished is None and d.heartbeat_time > beat
    end_by_shutdown_time(lv, names)


def end_by_shutdown_time(lv: LibvirtFactory, names: List[str]) -> None:
    """The adopted VM is fully managed again: a past shutdown_time destroys and finishes it."""
    d = lv.dir(names[0])
    with open(lv.config_file) as f:
        text = f.read()
    with open(lv.config_file, "w") as f:
        f.write(text.replace("[settings]\n",
                             f"[settings]\nshutdown_time = {int(time.time()) - 1}\n", 1))
    report = lv.cycle()
    assert report.destroyed == [names[0]] and report.finished == [names[0]], report
    assert report.created == report.zombies == report.errors == [], report
    assert d.finished is not None and d.shutdown_message == "100 Shutdown time reached"
    assert lv.domains() == {}
    with open(lv.load().settings.paths.finish_record(VM_MT)) as f:
        assert f.read().split() == [str(d.created), VM_MT, names[0]]


@pytest.mark.libvirt
def test_libvirtd_restarted_between_two_cycles_is_no_outage(lv):
    """libvirtd stops and is back before the next cycle: that cycle manages the VM."""
    names, vm = running_vm(lv, TICKER, Stopwatch())
    engines.wait_exited("libvirt", engines.stop("libvirt"))
    engines.restore("libvirt")
    reconnect(lv)
    report = lv.cycle()
    unmanaged = plan_of(lv.load().settings.paths).unmanaged
    nothing_done(report)
    assert unmanaged == {} and "unavailable" not in report.idle[names[1]], report.idle
    check_adopted(lv, names, vm)
