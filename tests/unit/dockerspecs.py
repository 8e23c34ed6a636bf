# SPDX-License-Identifier: BSD-2-Clause
"""vac.conf text with one Docker machinetype (dock) and the MachineSpec the factory would give
its machine in slot 3, for Docker backend tests without an engine."""
from __future__ import annotations

from vac.backends.base import MachineSpec
from vac.machine.directory import MachineDir
from vac.machine.slots import Slot, machine_name

CONF = """
[settings]
vac_space = space.example.com
factory_name = factory1.example.com
mb_per_processor = 1000
docker_url = {url}
backend_timeout_seconds = 3

[machinetype dock]
machine_model = docker
root_image = docker://vac-test/busybox:1
target_share = 1
{extra}
"""


def make_spec(paths, config, processors: int = 2, created: int = 1700000000,
              user_data: str = "#!/bin/sh\nexit 0\n") -> MachineSpec:
    settings, mt = config.settings, config.machinetypes["dock"]
    name = machine_name(settings.factory_name, 3)
    directory = MachineDir.create(paths, created, mt.name, name)
    if user_data is not None:
        directory.write("user_data", user_data, mode=0o600)
    return MachineSpec(name=name, machinetype=mt, settings=settings, slot=Slot(3, name),
                       processors=processors, memory_mb=settings.mb_per_processor * processors,
                       created=created, shutdown_time=created + 3600, uuid="uuid-1",
                       directory=directory)
