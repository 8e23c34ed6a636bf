# SPDX-License-Identifier: BSD-2-Clause
"""The Apptainer backend driven through vacd's cycle: Factory.run_cycle on the real Apptainer.

Needs scripts/ci/setup-apptainer.sh (apptainer, the user vacsngly, the busybox sandbox image)
and root. Each test has its own factory_name, its own state directory under /var/tmp (pytest's
tmp_path is under a 0700 directory the user cannot enter) and its own cgroup parent
(vac-test-<random>), and runs real cycles with the real clock and short real sleeps. The
machinetype takes both processors of the 2-processor factory, so one machine fills it.

Every cycle runs the Singularity zombie killer, which SIGKILLs every vacsngly process outside
this factory's live machines. Other tests (and other developers) may be running containers as
vacsngly at the same time, so the killer is only shown this test's processes: those in its
cgroup parent and the strays it starts itself. Teardown kills and removes all of them.
"""
from __future__ import annotations

import time

import pytest
from apptainer_env import require_root, require_usable, user_uid
from apptainer_world import BURN, World, alive
from waiting import GENEROUS

from vac.host import cgroupmachine, procs
from vac.machine.directory import MachineState, read_slot_record
from vac.machine.slots import machine_name

pytestmark = [pytest.mark.apptainer, pytest.mark.root]


@pytest.fixture
def world(monkeypatch):
    require_root()
    w = World(monkeypatch)
    require_usable(w.backend)
    yield w
    w.cleanup()


@pytest.mark.parametrize("model", ["singularity", "apptainer"])
def test_a_machine_runs_as_the_user_and_is_finished_by_the_next_cycle(world, model):
    world.write(model=model, payload=f"""
        id -u > $O/uid
        hostname > $O/hostname
        cat $MACHINEFEATURES/total_cpu > $O/total_cpu
        cat $MACHINEFEATURES/site_flavour > $O/flavour
        cat $JOBFEATURES/allocated_cpu > $O/allocated_cpu
        cat $JOBFEATURES/job_id > $O/job_id
        echo "$MACHINEFEATURES $JOBFEATURES $JOBOUTPUTS" > $O/env
        if echo x > $MACHINEFEATURES/new 2>/dev/null; then echo rw; else echo ro; fi > $O/mjf_mode
        {BURN}
        echo "200 Intended work completed" > $O/shutdown_message
        """)
    report = world.cycle()
    assert report.created == [world.name] and report.errors == []
    idle = machine_name(world.factory_name, 1)
    assert list(report.idle) == [idle] and "total_processors" in report.idle[idle]
    d = world.dir()
    assert read_slot_record(world.backend.settings.paths, world.name).model == model
    assert world.cgroup().memory_limit() == 2 * 2048 * 1024 * 1024
    world.drain()
    world.wait_until_shut_down()

    assert world.out("uid") == str(user_uid())
    assert world.out("hostname") == world.name
    assert world.out("total_cpu") == "2"
    assert world.out("allocated_cpu") == "2"
    assert world.out("flavour") == "vanilla"
    assert world.out("env") == "/tmp/machinefeatures /tmp/jobfeatures /tmp/joboutputs"
    assert world.out("mjf_mode") == "ro"
    assert world.out("ud_hostname") == world.name
    machine_uuid = world.out("ud_uuid")
    assert len(machine_uuid) == 36 and machine_uuid in d.job_id
    assert world.out("job_id") == d.job_id  # the payload saw the job_id the factory keeps
    assert "##user_data" not in d.read("user_data")

    report = world.cycle()
    assert report.finished == [world.name] and report.created == [] and report.errors == []
    assert report.destroyed == [] and report.zombies == []
    d = world.dir()
    assert d.finished is not None
    assert d.shutdown_message == "200 Intended work completed"
    cpu = d.read_backend_record()["cpu_seconds"]  # about 1 s burnt, kept unrounded
    assert cpu > 0.5 and d.cpu_seconds == int(cpu)  # the heartbeat: whole seconds (original's)
    assert d.read_backend_record()["exit_code"] == 0
    assert not world.cgroup().exists()
    again = world.cycle()
    assert again.finished == [] and again.created == [] and again.errors == []


def test_the_memory_limit_is_enforced_and_the_machine_finishes_with_the_oom_message(world):
    world.write(mb=32, payload="""
        touch $O/up
        dd if=/dev/zero of=/dev/null bs=200M count=1
        echo dd=$? > $O/dd
        """)
    report = world.cycle()
    assert report.created == [world.name] and report.errors == []
    assert world.cgroup().memory_limit() == 64 * 1024 * 1024
    world.wait_until_shut_down()
    assert world.out("dd") == "dd=137"  # SIGKILLed by the OOM killer
    report = world.cycle()
    assert report.finished == [world.name] and report.errors == []
    assert report.created == []  # a 700 is an abort: backoff
    assert world.dir().shutdown_message == \
        "700 Vac: container killed by the OOM killer (memory limit 64 MiB)"
    assert world.dir().read_backend_record()["oom_killed"] is True
    assert not world.cgroup().exists()


def test_a_machine_past_max_wallclock_is_destroyed_with_all_its_processes(world):
    world.write(wallclock=1, payload="""
        sleep 1001 & sleep 1002 & sleep 1003 &
        touch $O/up
        sleep 1000
        """)
    report = world.cycle()
    assert report.created == [world.name] and report.errors == []
    world.drain()
    world.wait_for_output("up")
    d = world.dir()
    deadline = time.monotonic() + GENEROUS
    while len(world.cgroup().pids()) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = world.cgroup().pids()
    assert len(pids) >= 5  # the head, the shell, three sleepers (and Apptainer's own)
    assert all(procs.read(p).uid == user_uid() for p in pids)
    while time.time() <= d.shutdown_time:
        time.sleep(0.1)

    report = world.cycle()
    assert report.destroyed == [world.name] and report.finished == [world.name]
    assert report.errors == [] and report.created == []
    assert d.shutdown_message == "100 Shutdown time reached"
    assert d.finished is not None
    assert not world.cgroup().exists()
    assert not any(alive(p) for p in pids)


def test_a_restarted_vacd_adopts_the_running_machine(world):
    world.write(payload="touch $O/up; sleep 1000")
    report = world.cycle()
    assert report.created == [world.name]
    world.wait_for_output("up")
    d = world.dir()
    record = d.read_backend_record()
    job_id, slot = d.job_id, read_slot_record(world.backend.settings.paths, world.name)
    before = world.cgroup().pids()
    first = world.backend

    world.start()  # a new vacd over the same state
    assert world.backend is not first
    report = world.cycle()
    assert report.created == [] and report.destroyed == [] and report.zombies == []
    assert report.finished == [] and report.errors == []
    assert world.dir().path == d.path  # no new machine in the slot
    assert read_slot_record(world.backend.settings.paths, world.name) == slot
    assert d.job_id == job_id and d.read_backend_record()["pid"] == record["pid"]
    assert alive(record["pid"])
    status = world.backend.status(world.name, d)
    assert status.state == MachineState.RUNNING and status.backend_id == record["job_id"]
    assert [s.name for s in world.backend.list_machines()] == [world.name]
    assert cgroupmachine.list_children(world.backend.hierarchy, ("",), world.parent) == \
        [f"apptainer-{world.name}"]
    assert world.cgroup().pids() == before  # nothing killed, nothing started twice
    report = world.cycle()
    assert report.created == [] and report.errors == []


def test_user_processes_outside_every_machine_are_killed_by_the_next_cycle(world):
    world.write(payload="touch $O/up; sleep 1000")
    report = world.cycle()
    assert report.created == [world.name]
    world.wait_for_output("up")
    machine = world.cgroup().pids()
    loose = world.stray()
    gone = machine_name(world.factory_name, 7)  # a machine of ours whose directory has gone
    leftover = world.cgroup(gone)
    leftover.create(1, 64 * 1024 * 1024)
    held = world.stray(leftover)
    deadline = time.monotonic() + GENEROUS
    while not leftover.pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert held.pid in leftover.pids()

    report = world.cycle()
    assert report.errors == [] and report.created == [] and report.destroyed == []
    assert report.zombies == [gone]
    assert loose.wait(timeout=GENEROUS) == -9
    assert held.wait(timeout=GENEROUS) == -9
    assert not leftover.exists()
    assert world.cgroup().pids() == machine  # the live machine is left alone
    assert world.backend.status(world.name, world.dir()).state == MachineState.RUNNING


def test_an_empty_factory_kills_user_processes_too(world):
    world.write(payload="true", draining=True)  # no machine now, none created
    loose = world.stray()
    report = world.cycle()
    assert report.created == [] and report.errors == []
    assert loose.wait(timeout=GENEROUS) == -9
