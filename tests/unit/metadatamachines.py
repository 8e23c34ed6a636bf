# SPDX-License-Identifier: BSD-2-Clause
"""Machine directories as the libvirt metadata service finds them: slot record, job and machine
features, user_data and the root public key."""
from __future__ import annotations

from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.machine.slots import machine_name

FACTORY = "f1.example.com"
KEY = "ssh-rsa AAAAB3NzaC1yc2E vac@f1"


def make_machine(paths, ordinal, uuid, user_data="#!/bin/sh\necho hi\n", created=1700000000):
    name = machine_name(FACTORY, ordinal)
    write_slot_record(paths, name, SlotRecord(created, "vmtype", "vm-raw"))
    d = MachineDir.create(paths, created, "vmtype", name)
    d.write("jobfeatures/job_id", uuid)
    d.write("jobfeatures/allocated_cpu", f"{ordinal}\n")
    d.write("machinefeatures/total_cpu", str(10 + ordinal))
    d.write("machinefeatures/hs06", "99.5")
    if user_data is not None:
        d.write("user_data", user_data)
    d.write("root_public_key", KEY + "\n")
    return d
