# SPDX-License-Identifier: BSD-2-Clause
"""DockerBackend tests' own factory on the real engine: its configuration, machine
directories made as the factory makes them, and removal of its containers by label.

FACTORY is drawn once per test run, so only this run's containers carry its label.
"""
from __future__ import annotations

import time
import uuid
from typing import Optional

from docker_engine import ENGINE, IMAGE, sdk
from waiting import ENGINE_CALL

from vac.backends.base import MachineSpec
from vac.backends.docker.backend import DockerBackend
from vac.machine import mjf
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name

FACTORY = f"dk{uuid.uuid4().hex[:8]}.example.com"   # this run's containers only
SPACE = "space.example.com"

CONF = """
[settings]
vac_space = {space}
factory_name = {factory}
mb_per_processor = {mb}
docker_url = {url}
backend_timeout_seconds = {timeout}

[machinetype dock]
machine_model = docker
root_image = docker://{image}
target_share = 1
tmp_binds = /scratch
docker_pids_limit = 123
{extra}
"""

def config_text(mb: int = 64, url: str = ENGINE, timeout: float = ENGINE_CALL, extra: str = "",
                image: str = IMAGE) -> str:
    return CONF.format(space=SPACE, factory=FACTORY, mb=mb, url=url, timeout=timeout,
                       extra=extra, image=image)


def remove_ours() -> None:
    api = sdk()
    for c in api.containers(all=True, filters={"label": f"vac.factory={FACTORY}"}):
        api.remove_container(c["Id"], force=True)


def make_machine(paths, backend: DockerBackend, ordinal: int, payload: Optional[str],
                 processors: int = 1, created: Optional[int] = None) -> MachineSpec:
    """A machine directory as the factory makes it: slot record, MJF, user_data."""
    settings = backend.config.settings
    mt = backend.config.machinetypes["dock"]
    name = machine_name(settings.factory_name, ordinal)
    created = created or int(time.time())
    write_slot_record(paths, name, SlotRecord(created, mt.name, mt.machine_model))
    directory = MachineDir.create(paths, created, mt.name, name)
    mjf.write_mjf(directory, mjf.MjfContext(settings=settings, machinetype=mt,
                                            processors=processors, shutdown_time=created + 600,
                                            now=created, job_id=None))
    if payload is not None:
        directory.write("user_data", payload, mode=0o644)
    return MachineSpec(name=name, machinetype=mt, settings=settings, slot=Slot(ordinal, name),
                       processors=processors, memory_mb=settings.mb_per_processor * processors,
                       created=created, shutdown_time=created + 600, uuid=str(uuid.uuid4()),
                       directory=directory)
