# SPDX-License-Identifier: BSD-2-Clause
"""A factory of its own on the real Docker engine, driven cycle by cycle by the tests.

Each DockerFactory has a factory_name of its own, so left-over or parallel containers never
collide; remove_all() removes every container it made, by label (or id).
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from typing import Dict, List

from docker_engine import ENGINE, IMAGE, sdk
from waiting import ENGINE_CALL

from vac.backends.docker.backend import DockerBackend
from vac.cycle.factory import CycleReport, Factory
from vac.machine.directory import MachineDir
from vac.machine.slots import machine_name

SPACE = "cycle.example.com"
MT = "dock"

CONF = """
[settings]
vac_space = {space}
factory_name = {factory}
state_dir = {state}
host_processors = {slots}
overload_per_processor = 1000
mb_per_processor = {mb}
docker_url = {url}
backend_timeout_seconds = {timeout}
{extra_settings}

[machinetype {mt}]
machine_model = docker
root_image = docker://{image}
user_data = {user_data}
target_share = 1
docker_pids_limit = 200
backoff_seconds = 600
{extra_mt}
"""

class DockerFactory:
    """One factory of its own on the real engine, driven cycle by cycle."""

    def __init__(self, tmp_path, make_config):
        self.tmp_path = tmp_path
        self.make_config = make_config
        self.name = f"dc{uuid.uuid4().hex[:8]}.example.com"
        self.state = str(tmp_path / "state")
        self.user_data = tmp_path / "user_data"
        self.text = ""
        self.factory = Factory(self.load)
        self.extra_ids: List[str] = []

    def write(self, payload: str, slots: int = 3, mb: int = 64, url: str = ENGINE,
              timeout: float = ENGINE_CALL, extra_settings: str = "", extra_mt: str = "") -> None:
        self.user_data.write_text(payload)
        self.text = CONF.format(space=SPACE, factory=self.name, state=self.state, slots=slots,
                                mb=mb, url=url, timeout=timeout, extra_settings=extra_settings,
                                mt=MT, image=IMAGE, user_data=self.user_data,
                                extra_mt=extra_mt)
        self.config_file = str(self.load().files[0])

    def load(self):
        return self.make_config(self.text)

    def cycle(self) -> CycleReport:
        return self.factory.run_cycle()

    def slot(self, n: int) -> str:
        return machine_name(self.name, n)

    def slots(self, count: int) -> List[str]:
        return [self.slot(n) for n in range(count)]

    def dir(self, name: str) -> MachineDir:
        d = MachineDir.for_slot(self.load().settings.paths, name)
        assert d is not None, f"{name} has no machine directory"
        return d

    def containers(self) -> Dict[str, dict]:
        """This factory's containers on the engine, by container name."""
        found = sdk().containers(all=True, filters={"label": f"vac.factory={self.name}"})
        return {c["Names"][0].lstrip("/"): c for c in found}

    def remove_all(self) -> None:
        """Every container of this test: ours through the backend (it removes their cgroup
        parents too), then whatever is left by label or id."""
        if self.text:
            settings = dataclasses.replace(self.load().settings, docker_url=ENGINE)
            backend = DockerBackend(settings)
            for machine in backend.list_machines():
                backend.destroy(machine.name, None)
        api = sdk()
        for c in api.containers(all=True, filters={"label": f"vac.factory={self.name}"}):
            api.remove_container(c["Id"], force=True)
        for ident in self.extra_ids:
            try:
                api.remove_container(ident, force=True)
            except Exception:  # already gone
                pass


def all_exited(world: DockerFactory, count: int) -> bool:
    found = world.containers()
    return len(found) == count and all(c["State"] == "exited" for c in found.values())


def machine_dirs(world: DockerFactory) -> List[MachineDir]:
    machines = world.load().settings.paths.machines
    return [MachineDir(os.path.join(machines, n)) for n in sorted(os.listdir(machines))
            if not n.startswith(".")]
