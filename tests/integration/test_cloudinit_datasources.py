# SPDX-License-Identifier: BSD-2-Clause
"""Debian's own cloud-init (22.4, bookworm) reads a machine's context from Vac's metadata
service with its EC2 and its OpenStack datasource.

The datasources' own code runs (Debian's /usr/bin/python3 with the cloud-init package that
scripts/ci/setup-cloudinit.sh unpacks) against the real service on 127.0.0.1, which takes the
client for slot 3 (169.254.169.3). Checked: the datasource is found, instance-id is the job_id,
hostname the machine name, the root public key, user_data, and what cloud-init warned about.
The network part (DHCP, the route to 169.254.169.254) is test_vmnetwork_dhcp.py's; booting a
guest with cloud-init is not done here. About 3 s.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from cloudinit_env import DRIVER, FACTORY, JOB_ID, KEY, PYTHON, SITE, USER_DATA, machine
from testbed import require_engine

from vac.backends.libvirt import metadata


@pytest.fixture
def url(paths):
    require_engine("cloud-init", os.path.isdir(f"{SITE}/cloudinit") and os.path.exists(PYTHON),
                   "scripts/ci/setup-cloudinit.sh unpacks Debian's cloud-init")
    machine(paths, 3)
    service = metadata.MetadataService(paths, FACTORY, client_address=lambda p: "169.254.169.3")
    server = metadata.serve(service, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def datasource(kind: str, url: str, tmp_path) -> dict:
    done = subprocess.run([PYTHON, DRIVER, kind, url, str(tmp_path), SITE], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_context(found: dict) -> None:
    assert found["ok"], found["warnings"]
    assert found["instance_id"] == JOB_ID
    assert found["local_hostname"] == "f1-03"
    assert found["hostname"] == "f1-03.example.com"
    assert [k.strip() for k in found["keys"]] == [KEY]   # OpenStack: KEY + "\n"
    assert found["user_data"] == USER_DATA


def test_ec2_datasource(url, tmp_path):
    found = datasource("ec2", url, tmp_path)
    check_context(found)
    assert found["availability_zone"] == FACTORY
    # the metadata's network key: read without a warning; it configures the NIC with this MAC
    # (none here: the host running the test has no such NIC)
    assert found["network"] == {"version": 2, "ethernets": {}}, found["network"]
    assert found["warnings"] == []


def test_openstack_datasource(url, tmp_path):
    found = datasource("openstack", url, tmp_path)
    check_context(found)
    assert found["availability_zone"] == FACTORY
    # network_data.json: DHCP for IPv4 only on the interface with the slot's MAC (the driver
    # gives the VM's NIC as eth0: the host running the test has no such NIC)
    (link,) = found["network"]["config"]
    assert (link["type"], link["name"], link["mac_address"]) == \
        ("physical", "eth0", "56:4d:a9:fe:a9:03"), link
    assert [s["type"] for s in link["subnets"]] == ["dhcp4"], link
    assert found["warnings"] == []
