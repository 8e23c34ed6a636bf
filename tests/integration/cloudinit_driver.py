# SPDX-License-Identifier: BSD-2-Clause
"""Run one of Debian's cloud-init datasources (EC2 or OpenStack) against a metadata URL and print
what it read as JSON. Run by test_cloudinit_datasources.py with Debian's /usr/bin/python3 and
the cloud-init modules unpacked by scripts/ci/setup-cloudinit.sh (this file imports nothing
of Vac's).

Usage: python3 cloudinit_driver.py ec2|openstack|openstack-local URL WORKDIR CLOUDINIT_SITE [NIC]

openstack-local is cloud-init's init-local OpenStack datasource: it first brings NIC up with
its own early DHCP (dhclient, then `ip addr add ... broadcast <offered>`), the step that failed
when the offer said broadcast 169.254.169.254 (as Vac's network once did); run it in a network
namespace.

Two platform answers that come from the VM's DMI are given as a QEMU guest of Vac's has them,
whatever host the test runs on: the EC2 platform is unknown (not AWS, so no IMDSv2 token), and
for OpenStack the DMI product name is "OpenStack Nova" (the SMBIOS value ds-identify and
cloud-init's detect_openstack look for). The OpenStack datasource's EC2 read goes to URL too.
"""
from __future__ import annotations

import json
import logging
import sys

kind, url, work, site = sys.argv[1:5]
nic = sys.argv[5] if len(sys.argv) > 5 else None
sys.path.insert(0, site)

from cloudinit import distros, helpers  # noqa: E402
from cloudinit.sources import DataSourceEc2, DataSourceOpenStack  # noqa: E402
from cloudinit.sources.helpers import ec2  # noqa: E402

warnings = []


class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(f"{record.name}: {record.getMessage()}")


logging.getLogger().addHandler(Keep(level=logging.WARNING))
logging.getLogger().setLevel(logging.DEBUG)
paths = helpers.Paths({"cloud_dir": f"{work}/cloud", "run_dir": f"{work}/run"})
distro = distros.fetch("debian")("debian", {}, paths)
name = "Ec2" if kind == "ec2" else "OpenStack"
sys_cfg = {"datasource_list": [name, "None"],
           "datasource": {name: {"metadata_urls": [url], "max_wait": 30, "timeout": 10}}}
if kind == "ec2":
    DataSourceEc2.identify_platform = lambda: DataSourceEc2.CloudNames.UNKNOWN
    ds = DataSourceEc2.DataSourceEc2(sys_cfg, distro, paths)
else:
    DataSourceOpenStack.detect_openstack = lambda accept_oracle=False: True
    # The OpenStack datasource also reads the EC2 tree, always from 169.254.169.254 (in a VM:
    # the same service); here from the service under test.
    ec2_metadata = ec2.get_instance_metadata
    ec2.get_instance_metadata = lambda *a, **kw: ec2_metadata(
        *a, **dict(kw, metadata_address=url))
    # network_data.json names the VM's one interface by its MAC, which the host running the
    # test does not have: cloud-init is told the VM's NIC has it (NIC, else eth0).
    from cloudinit.sources.helpers import openstack  # noqa: E402
    convert = openstack.convert_net_json
    openstack.convert_net_json = lambda data, known_macs=None: convert(data, known_macs={
        link["ethernet_mac_address"].lower(): nic or "eth0"
        for link in (data or {}).get("links", []) if link.get("ethernet_mac_address")})
    if kind == "openstack-local":
        ds = DataSourceOpenStack.DataSourceOpenStackLocal(sys_cfg, distro, paths)
        ds._fallback_interface = nic
    else:
        ds = DataSourceOpenStack.DataSourceOpenStack(sys_cfg, distro, paths)
ok = ds.get_data()
result = {"ok": ok, "warnings": warnings}
if ok:
    network = ds.network_config
    result.update(
        instance_id=ds.get_instance_id(),
        hostname=ds.get_hostname(fqdn=True).hostname,
        local_hostname=ds.get_hostname().hostname,
        keys=ds.get_public_ssh_keys(),
        user_data=(ds.get_userdata_raw() or b"").decode(),
        availability_zone=ds.availability_zone,
        network=network if isinstance(network, dict) else None,
        warnings=warnings)
print(json.dumps(result, default=str))
