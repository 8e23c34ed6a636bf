# SPDX-License-Identifier: BSD-2-Clause
"""FakeBackend: machines that exist only in a JSON file, for unit tests of the factory.

Enabled only with `enable_fake_backend = true`. It is never the proof that a real backend
works. Machine behaviour is scripted by the machinetype's fake_* options: how long a machine
runs, how much CPU it burns, the shutdown_message it writes, or an error on create.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable, Dict, List, Optional

from vac import fsutil
from vac.backends.base import Backend, Capabilities, MachineSpec, MachineStatus, Probe
from vac.errors import BackendError, BackendUnavailable
from vac.machine.directory import MachineDir, MachineState


class FakeBackend(Backend):
    NAME = "fake"
    MODELS = frozenset({"fake"})
    CAPABILITIES = Capabilities(machinefeatures_url="/etc/machinefeatures",
                                jobfeatures_url="/etc/jobfeatures",
                                joboutputs_url="/var/spool/joboutputs")

    def __init__(self, settings, clock: Callable[[], float] = time.time):
        super().__init__(settings)
        self.clock = clock
        self.available = True
        self.created: List[str] = []
        self.destroyed: List[str] = []

    @property
    def _file(self) -> str:
        return os.path.join(self.settings.state_dir, "fake-backend.json")

    def _load(self) -> Dict[str, dict]:
        text = fsutil.read_optional(self._file, 16 * 1024 * 1024)
        return json.loads(text) if text else {}

    def _save(self, machines: Dict[str, dict]) -> None:
        fsutil.atomic_write(self._file, json.dumps(machines, sort_keys=True))

    def probe(self) -> Probe:
        if not self.available:
            return Probe(False, reason="fake engine switched off by the test")
        return Probe(True, version="fake 1")

    def create(self, spec: MachineSpec) -> str:
        self._require()
        mt = spec.machinetype
        if mt.fake_create_error:
            raise BackendError(self.NAME, mt.fake_create_error, spec.name)
        machines = self._load()
        machines[spec.name] = {
            "id": spec.uuid, "started": self.clock(), "run_seconds": mt.fake_run_seconds,
            "cpu_per_second": mt.fake_cpu_per_second * spec.processors,
            "message": mt.fake_shutdown_message, "dir": spec.directory.path,
        }
        self._save(machines)
        self.created.append(spec.name)
        return spec.uuid

    def destroy(self, name: str, directory: Optional[MachineDir]) -> None:
        self._require()
        machines = self._load()
        if machines.pop(name, None) is not None:
            self.destroyed.append(name)
        self._save(machines)

    def list_machines(self) -> List[MachineStatus]:
        self._require()
        return [self._status(name, m) for name, m in self._load().items()]

    def status(self, name: str, directory: Optional[MachineDir]) -> MachineStatus:
        self._require()
        machine = self._load().get(name)
        if machine is None:
            return MachineStatus(name=name, state=MachineState.SHUTDOWN)
        status = self._status(name, machine)
        if status.state == MachineState.SHUTDOWN and directory is not None and \
                machine.get("message"):
            # A real payload writes its shutdown_message before it exits.
            directory.write_shutdown_message_if_none(machine["message"])
        return status

    def collect(self, name: str, directory: MachineDir) -> MachineStatus:
        """status(): a machine that has ended has written its message; one the factory ends
        before its time (collect comes before destroy) has not."""
        return self.status(name, directory)

    def _status(self, name: str, machine: dict) -> MachineStatus:
        age = max(0.0, self.clock() - machine["started"])
        ran = min(age, machine["run_seconds"])
        state = MachineState.RUNNING if age < machine["run_seconds"] else MachineState.SHUTDOWN
        return MachineStatus(name=name, state=state, backend_id=machine["id"],
                             cpu_seconds=ran * machine["cpu_per_second"],
                             exit_code=None if state == MachineState.RUNNING else 0)

    def _require(self) -> None:
        if not self.available:
            raise BackendUnavailable(self.NAME, "fake engine switched off by the test")
