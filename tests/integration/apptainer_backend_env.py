# SPDX-License-Identifier: BSD-2-Clause
"""ApptainerBackend tests' own world on the real Apptainer: a state directory under /var/tmp
(pytest's tmp_path is under a 0700 directory the user cannot enter), a config, a backend with
a private cgroup parent (vac-test-<random>), and machine directories prepared as the factory
prepares them (slot record, MachineDir, MJF, user_data). cleanup() kills and removes
everything under that parent.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

from apptainer_env import SANDBOX, remove_cgroups
from waiting import ENGINE_CALL, GENEROUS

from vac.backends.apptainer.backend import ApptainerBackend
from vac.backends.base import MachineSpec
from vac.host import cgroupmachine
from vac.machine import mjf
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name

CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = vac01.example.com
factory_name = {factory}
state_dir = {state}
singularity_user = vacsngly
mb_per_processor = {mb}
machinefeatures_option_site_flavour = vanilla

[machinetype app]
machine_model = apptainer
target_share = 1
root_image = {image}
user_data = /dev/null
container_command = /bin/sh /user_data
"""


class Env:
    """A state directory, a config, a backend with a private cgroup parent, and machines."""

    def __init__(self, make_config, tmp_path):
        self.state = tempfile.mkdtemp(prefix="vac-apptainer-", dir="/var/tmp")
        os.chmod(self.state, 0o755)
        self.tag = uuid.uuid4().hex[:8]
        self.factory = f"t{self.tag}.example.com"
        self.make_config = make_config
        self.parent = f"vac-test-{self.tag}"
        self.configure(2048)
        self.names = []

    def conf_text(self, mb, image):
        return CONF.format(engine_call=ENGINE_CALL, factory=self.factory, state=self.state,
                           mb=mb, image=image)

    def configure(self, mb, image=SANDBOX):
        self.cfg = self.make_config(self.conf_text(mb, image))
        self.paths = self.cfg.settings.paths
        self.paths.ensure()
        self.backend = self.new_backend()

    def new_backend(self):
        return ApptainerBackend(self.cfg.settings, cgroup_parent=self.parent)

    def machine(self, payload, ordinal=1, processors=1):
        """A machine directory prepared like the factory does; returns its MachineSpec."""
        name = machine_name(self.factory, ordinal)
        self.names.append(name)
        mt = self.cfg.machinetypes["app"]
        now = int(time.time())
        write_slot_record(self.paths, name, SlotRecord(now, "app", "apptainer"))
        directory = MachineDir.create(self.paths, now, "app", name)
        mjf.write_mjf(directory, mjf.MjfContext(settings=self.cfg.settings, machinetype=mt,
                                                processors=processors, shutdown_time=now + 3600,
                                                now=now, job_id=None))
        directory.write("user_data", "#!/bin/sh\n" + payload + "\n", mode=0o755)
        return MachineSpec(name=name, machinetype=mt, settings=self.cfg.settings,
                           slot=Slot(ordinal, name), processors=processors,
                           memory_mb=self.cfg.settings.mb_per_processor * processors,
                           created=now, shutdown_time=now + 3600, uuid=str(uuid.uuid4()),
                           directory=directory)

    def wait(self, spec, state, timeout=GENEROUS, backend=None):
        backend = backend or self.backend
        deadline = time.monotonic() + timeout
        while True:
            status = backend.status(spec.name, spec.directory)
            if status.state == state or time.monotonic() > deadline:
                return status
            time.sleep(0.05)

    def wait_for_file(self, path, timeout=GENEROUS):
        deadline = time.monotonic() + timeout
        while not os.path.exists(path):
            assert time.monotonic() < deadline, f"{path} never appeared"
            time.sleep(0.02)

    def cgroup(self, spec_or_name):
        name = getattr(spec_or_name, "name", spec_or_name)
        return cgroupmachine.MachineCgroup(self.backend.hierarchy, f"apptainer-{name}",
                                           self.parent)

    def cleanup(self):
        remove_cgroups(self.backend.hierarchy, self.parent)
        shutil.rmtree(self.state, ignore_errors=True)
