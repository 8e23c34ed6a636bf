# SPDX-License-Identifier: BSD-2-Clause
"""`vac config check` names every original option that is accepted but does nothing here,
located at FILE:LINE [SECTION] OPTION (a defect fixed here: the notice had no line numbers)."""
from __future__ import annotations

import json
import textwrap

from vac import cli

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
state_dir = {state}
description = our test factory
fix_networking = {fix}

[machinetype dock]
machine_model = docker
root_image = docker://busybox
user_data = /bin/true
root_device = sda
image_signing_dn = /DC=ch/.*
tmp_binds = /scratch

[machinetype vm]
machine_model = vm-raw
root_image = {image}
user_data = /bin/true
container_command = /start
cvmfs_repositories = lhcb.cern.ch
root_device = vda
"""


def run(tmp_path, capsys, fix="false", *args):
    conf = tmp_path / "vac.conf"
    image = tmp_path / "raw.img"        # the local files exist: config check checks them
    image.write_bytes(b"\0" * 512)
    conf.write_text(textwrap.dedent(CONF.format(state=tmp_path / "state", fix=fix, image=image)))
    assert cli.main(["--config", str(conf), "config", "check", *args]) == 0
    return capsys.readouterr().out, str(conf)


def test_each_option_without_effect_is_reported_with_its_reason_and_origin(tmp_path, capsys):
    out, conf = run(tmp_path, capsys)
    lines = [line for line in out.splitlines() if "accepted but not supported" in line]
    assert lines == [
        f"warning: {conf}:6 [settings] description: description = our test factory: accepted but not "
        "supported: free text that nothing reads (the original did not read it either)",
        f"warning: {conf}:7 [settings] fix_networking: fix_networking = false: accepted but not supported: the "
        "NAT network vac_169.254.0.0 is always checked and repaired before VMs are created; "
        "only vac doctor looks at this option",
        f"warning: {conf}:13 [machinetype dock] root_device: root_device = sda: accepted but not supported: "
        "only VMs have a root disk device (machine_model is docker)",
        f"warning: {conf}:14 [machinetype dock] image_signing_dn: image_signing_dn = /DC=ch/.*: accepted but not "
        "supported: only CernVM ISO images carry a signature (machine_model is docker)",
        f"warning: {conf}:21 [machinetype vm] container_command: container_command = /start: accepted but not "
        "supported: only containers run a command (machine_model is vm-raw)",
        f"warning: {conf}:22 [machinetype vm] cvmfs_repositories: cvmfs_repositories = lhcb.cern.ch: accepted but "
        "not supported: only containers get /cvmfs bound in; VMs mount CernVM-FS themselves "
        "(machine_model is vm-raw)",
    ]
    # tmp_binds on docker and root_device on a VM do something: not reported
    assert not any("tmp_binds" in line or "root_device = vda" in line for line in lines)


def test_an_honoured_value_is_not_reported_and_json_lists_them(tmp_path, capsys):
    out, _ = run(tmp_path, capsys, "true", "--json")
    unsupported = json.loads(out)["unsupported"]
    assert len(unsupported) == 5 and not any("fix_networking" in u for u in unsupported)
