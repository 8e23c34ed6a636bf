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

import os
import pwd
import shutil
import subprocess
import tempfile
import textwrap
import time
import uuid

import pytest
from apptainer_env import SANDBOX, USER, remove_cgroups, require_root, require_usable, user_uid
from waiting import GENEROUS

from vac.backends.apptainer.backend import ApptainerBackend, child_setup
from vac.config import load
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory
from vac.host import cgroupmachine, cgroups, procs
from vac.host.facts import HostFacts
from vac.machine.directory import MachineDir, MachineState, read_slot_record
from vac.machine.slots import machine_name

pytestmark = [pytest.mark.apptainer, pytest.mark.root]

BURN = "i=0; while [ $i -lt 900000 ]; do i=$((i+1)); done"  # about 1 s of CPU in busybox sh
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = {factory}
state_dir = {state}
singularity_user = vacsngly
host_processors = 2
processors_per_superslot = 2
overload_per_processor = 1000
mb_per_processor = {mb}
draining = {draining}
machinefeatures_option_site_flavour = vanilla

[machinetype app]
machine_model = {model}
target_share = 1
root_image = {image}
user_data = {template}
min_processors = 2
max_processors = 2
max_wallclock_seconds = {wallclock}
"""
TEMPLATE = """#!/bin/sh
# user_data template of the Vac Apptainer cycle tests ##user_data___##
O=$JOBOUTPUTS
echo '##user_data_machine_hostname##' > $O/ud_hostname
echo '##user_data_uuid##' > $O/ud_uuid
"""


class World:
    """One factory over the real Apptainer: config file, state dir, cgroup parent, cycles."""

    def __init__(self, monkeypatch):
        self.state = tempfile.mkdtemp(prefix="vac-cycle-", dir="/var/tmp")
        os.chmod(self.state, 0o755)
        self.tag = uuid.uuid4().hex[:8]
        self.factory_name = f"c{self.tag}.example.com"
        self.parent = f"vac-test-{self.tag}"
        self.conf = os.path.join(self.state, "vac.conf")
        self.template = os.path.join(self.state, "user_data.template")
        self.host = HostFacts.read()
        self.strays = []  # pids of the processes this test started outside any machine
        self.stray_procs = []
        self.backends = []
        self.factory = None
        self.backend = None
        self.write("true")
        self._only_our_processes(monkeypatch)
        self.start()

    # Configuration and factories ---------------------------------------------------------

    def write(self, payload, model="singularity", mb=2048, wallclock=86400, draining=False):
        with open(self.template, "w") as f:
            f.write(TEMPLATE + textwrap.dedent(payload) + "\n")
        with open(self.conf, "w") as f:
            f.write(CONF.format(factory=self.factory_name, state=self.state, mb=mb,
                                model=model, image=SANDBOX, template=self.template,
                                wallclock=wallclock, draining="yes" if draining else "no"))

    def drain(self):
        """Stop creating (so a finished machine is not replaced by a new one)."""
        with open(self.conf) as f:
            text = f.read()
        with open(self.conf, "w") as f:
            f.write(text.replace("draining = no", "draining = yes"))

    def load(self):
        return load.build(load.read_raw([self.conf]), self.host)

    def start(self):
        """A new vacd: new Factory, new backend instance, the same state on disk."""
        settings = self.load().settings
        self.backend = ApptainerBackend(settings, cgroup_parent=self.parent)
        self.backends.append(self.backend)
        self.factory = Factory(self.load, BackendPool(settings, {"apptainer": self.backend}))

    def cycle(self):
        report = self.factory.run_cycle()
        assert report.config_error is None
        return report

    def _only_our_processes(self, monkeypatch):
        real = procs.pids_of_user
        prefix = f"/{self.parent}/"

        def ours(uid, proc_root="/proc"):
            key = cgroups.membership_key(self.backend.hierarchy)
            return [p for p in real(uid, proc_root) if p in self.strays
                    or procs.cgroups_of(p, proc_root).get(key, "").startswith(prefix)]

        monkeypatch.setattr(procs, "pids_of_user", ours)

    # Machines ---------------------------------------------------------------------------

    @property
    def name(self):
        return machine_name(self.factory_name, 0)

    def dir(self, name=None):
        return MachineDir.for_slot(self.backend.settings.paths, name or self.name)

    def out(self, rel, name=None):
        text = self.dir(name).read(os.path.join("joboutputs", rel))
        assert text is not None, f"joboutputs/{rel} is missing"
        return text.strip()

    def cgroup(self, name=None):
        return cgroupmachine.MachineCgroup(self.backend.hierarchy,
                                           f"apptainer-{name or self.name}", self.parent)

    def wait_for_output(self, rel, timeout=GENEROUS):
        path = self.dir().file(os.path.join("joboutputs", rel))
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            assert time.monotonic() < deadline, f"{path} never appeared"
            time.sleep(0.05)

    def wait_until_shut_down(self, timeout=GENEROUS):
        deadline = time.monotonic() + timeout
        while self.backend.status(self.name, self.dir()).state != MachineState.SHUTDOWN:
            assert time.monotonic() < deadline, f"{self.name} is still running"
            time.sleep(0.05)

    def stray(self, cgroup=None):
        """A `sleep` of the user outside every machine (inside `cgroup` if given)."""
        user = pwd.getpwnam(USER)
        if cgroup is None:
            proc = subprocess.Popen(["sleep", "1000"], user=user.pw_uid, group=user.pw_gid,
                                    extra_groups=[], start_new_session=True)
        else:
            proc = subprocess.Popen(["sleep", "1000"], start_new_session=True,
                                    preexec_fn=child_setup(cgroup.procs_files, user.pw_uid,
                                                           user.pw_gid, []))
        self.strays.append(proc.pid)
        self.stray_procs.append(proc)
        return proc

    def cleanup(self):
        for proc in self.stray_procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        remove_cgroups(self.backend.hierarchy, self.parent, self.backends)
        shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def world(monkeypatch):
    require_root()
    w = World(monkeypatch)
    require_usable(w.backend)
    yield w
    w.cleanup()


def alive(pid):
    info = procs.read(pid)
    return info is not None and info.alive


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
    deadline = time.monotonic() + 10
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
    deadline = time.monotonic() + 5
    while not leftover.pids() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert held.pid in leftover.pids()

    report = world.cycle()
    assert report.errors == [] and report.created == [] and report.destroyed == []
    assert report.zombies == [gone]
    assert loose.wait(timeout=5) == -9
    assert held.wait(timeout=5) == -9
    assert not leftover.exists()
    assert world.cgroup().pids() == machine  # the live machine is left alone
    assert world.backend.status(world.name, world.dir()).state == MachineState.RUNNING


def test_an_empty_factory_kills_user_processes_too(world):
    world.write(payload="true", draining=True)  # no machine now, none created
    loose = world.stray()
    report = world.cycle()
    assert report.created == [] and report.errors == []
    assert loose.wait(timeout=5) == -9
