# SPDX-License-Identifier: BSD-2-Clause
"""Debian's cloud-init as the tests run it: where scripts/ci/setup-cloudinit.sh unpacks it, the
Python that runs it, the driver that runs one datasource (cloudinit_driver.py), and a live
machine in a slot (its directory as vacd writes it) whose context the datasources read."""
from __future__ import annotations

import os

from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.slots import machine_name

SITE = "/var/lib/vac-test/cloud-init/usr/lib/python3/dist-packages"
PYTHON = "/usr/bin/python3"
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cloudinit_driver.py")
JOB_ID = "11111111-2222-4333-8444-555555555503"
USER_DATA = "#cloud-config\nruncmd:\n - [sh, -c, 'echo contextualised']\n"
FACTORY = "f1.example.com"
KEY = "ssh-rsa AAAAB3NzaC1yc2E vac@f1"


def machine(paths, ordinal: int) -> None:
    """A live machine in slot `ordinal` (its directory as vacd writes it)."""
    name = machine_name(FACTORY, ordinal)
    write_slot_record(paths, name, SlotRecord(1700000000, "vmtype", "vm-raw"))
    d = MachineDir.create(paths, 1700000000, "vmtype", name)
    d.write("jobfeatures/job_id", JOB_ID)
    d.write("user_data", USER_DATA)
    d.write("root_public_key", KEY + "\n")
