# SPDX-License-Identifier: BSD-2-Clause
"""One factory over the real Apptainer, driven cycle by cycle by the tests: its config file,
its own state directory under /var/tmp (pytest's tmp_path is under a 0700 directory the user
cannot enter), its own factory_name and cgroup parent (vac-test-<random>), and real cycles.
The machinetype takes both processors of the 2-processor factory, so one machine fills it.

Every cycle runs the Singularity zombie killer, which SIGKILLs every vacsngly process outside
this factory's live machines. Other tests may be running containers as vacsngly at the same
time, so the killer is only shown this world's processes: those in its cgroup parent and the
strays it starts itself. cleanup() kills and removes all of them.
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

from apptainer_env import SANDBOX, USER, remove_cgroups
from waiting import GENEROUS

from vac.backends.apptainer.backend import ApptainerBackend, child_setup
from vac.config import load
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory
from vac.host import cgroupmachine, cgroups, procs
from vac.host.facts import HostFacts
from vac.machine.directory import MachineDir, MachineState
from vac.machine.slots import machine_name

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


def alive(pid):
    info = procs.read(pid)
    return info is not None and info.alive
