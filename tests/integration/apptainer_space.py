# SPDX-License-Identifier: BSD-2-Clause
"""An Apptainer factory that real vacd processes run: its config (machines that sleep a second
and succeed), its state directory under /var/tmp, and what its files and every vacd's log say
of one machine, for a failure's message."""
from __future__ import annotations

import os
import tempfile
import uuid
from typing import List

from apptainer_env import SANDBOX
from waiting import ENGINE_CALL

from vac.backends.apptainer.backend import ApptainerBackend
from vac.config import load
from vac.host import cgroupmachine
from vac.host.facts import HostFacts
from vac.machine.directory import MachineDir

CONF = """
[settings]
backend_timeout_seconds = {engine_call:g}
vac_space = vac01.example.com
factory_name = {factory}
state_dir = {state}
singularity_user = vacsngly
host_processors = 4
overload_per_processor = 1000
mb_per_processor = 256
draining = {draining}

[machinetype app]
machine_model = singularity
target_share = 1
root_image = {image}
user_data = {template}
backoff_seconds = 0
fizzle_seconds = 0
"""
PAYLOAD = "#!/bin/sh\nsleep 1\necho '200 Success' > $JOBOUTPUTS/shutdown_message\n"


class Space:
    def __init__(self):
        self.state = tempfile.mkdtemp(prefix="vac-crash-", dir="/var/tmp")
        os.chmod(self.state, 0o755)
        self.factory = f"k{uuid.uuid4().hex[:8]}.example.com"
        self.conf = os.path.join(self.state, "vac.conf")
        self.template = os.path.join(self.state, "user_data")
        with open(self.template, "w") as f:
            f.write(PAYLOAD)
        self.write(draining=False)

    def story(self, d: MachineDir) -> str:
        """What the files, the machine's console (Apptainer's own output) and every vacd's
        log say of one machine (for a failure's message): the files and the console always,
        the last 40 log lines naming its slot or its process."""
        files = sorted(os.listdir(d.path))
        head = [f"files {files}; started {d.started}; finished {d.finished}; "
                f"backend.json {d.read_backend_record()}",
                f"console.log: {(d.read('console.log', 1 << 16) or '')[-2000:]!r}"]
        lines: List[str] = []
        pid = d.read_backend_record().get("pid")     # the stray killer names only the pid
        for log in sorted(n for n in os.listdir(self.state) if n.endswith(".log")):
            with open(os.path.join(self.state, log), errors="replace") as f:
                lines += [f"{log}: {line.rstrip()}" for line in f
                          if d.name in line or (pid and f"process {pid} " in line)]
        return "\n".join(head + lines[-40:])

    def write(self, draining: bool) -> None:
        with open(self.conf, "w") as f:
            f.write(CONF.format(engine_call=ENGINE_CALL,
                                factory=self.factory, state=self.state, image=SANDBOX,
                                template=self.template, draining="yes" if draining else "no"))

    def backend(self) -> ApptainerBackend:
        return ApptainerBackend(load.build(load.read_raw([self.conf]), HostFacts.read()).settings)

    def dirs(self) -> List[MachineDir]:
        machines = os.path.join(self.state, "machines")
        if not os.path.isdir(machines):
            return []
        return [MachineDir(os.path.join(machines, n)) for n in sorted(os.listdir(machines))
                if not n.startswith(".")]

    def machine_cgroups(self, backend: ApptainerBackend) -> List[str]:
        return [c for c in cgroupmachine.list_children(backend.hierarchy, ("apptainer-",),
                                                       backend.cgroup_parent)
                if self.factory.split(".")[0] in c]
