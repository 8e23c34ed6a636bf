# SPDX-License-Identifier: BSD-2-Clause
"""What the metadata service answers for cloud-init besides the machine's context:
the EC2 `network` tree of the VM's one interface, OpenStack vendor data `{}`, and OpenStack
network_data.json (over HTTP and on the config drive)."""
from __future__ import annotations

import json

from metadatamachines import FACTORY, make_machine

from vac.backends.libvirt import cloudmeta, configdrive, metadata


def body(service, peer, path):
    reply = service.get(peer, path)
    return reply.status, reply.body.decode()


def test_ec2_network_tree_names_the_slots_interface(paths):
    make_machine(paths, 5, "uuid-5")
    service = metadata.MetadataService(paths, FACTORY)
    peer = "169.254.169.5"
    assert "network/" in body(service, peer, "/latest/meta-data/")[1].splitlines()
    base = "/2018-09-24/meta-data/network/interfaces/macs"
    assert body(service, peer, "/latest/meta-data/network/") == (200, "interfaces/")
    assert body(service, peer, base) == (200, "56:4d:a9:fe:a9:05/")
    assert body(service, peer, f"{base}/56:4d:a9:fe:a9:05/") == \
        (200, "device-number\nlocal-ipv4s\nmac")
    assert body(service, peer, f"{base}/56:4d:a9:fe:a9:05/local-ipv4s") == (200, "169.254.169.5")
    assert body(service, peer, f"{base}/56:4d:a9:fe:a9:05/device-number") == (200, "0")
    assert body(service, peer, f"{base}/56:4d:a9:fe:a9:05/mac") == (200, "56:4d:a9:fe:a9:05")
    assert body(service, peer, f"{base}/56:4d:a9:fe:a9:06/mac")[0] == 404
    assert cloudmeta.ec2_network(None) == {}


def test_openstack_vendor_data_is_empty_json(paths):
    make_machine(paths, 3, "uuid-3")
    service = metadata.MetadataService(paths, FACTORY)
    for name in ("vendor_data.json", "vendor_data2.json"):
        reply = service.get("169.254.169.3", f"/openstack/2018-08-27/{name}")
        assert (reply.status, reply.body, reply.content_type) == (200, b"{}", "application/json")
    assert service.get("169.254.169.3", "/latest/vendor_data.json").status == 404


def test_openstack_network_data_offers_the_slots_interface_dhcp_for_ipv4_only(paths):
    make_machine(paths, 5, "uuid-5")
    service = metadata.MetadataService(paths, FACTORY)
    reply = service.get("169.254.169.5", "/openstack/latest/network_data.json")
    assert (reply.status, reply.content_type) == (200, "application/json")
    data = json.loads(reply.body)
    assert data["links"] == [{"id": "vac0", "type": "phy",
                              "ethernet_mac_address": "56:4d:a9:fe:a9:05"}]
    assert [(n["link"], n["type"]) for n in data["networks"]] == [("vac0", "ipv4_dhcp")]
    assert data["services"] == []
    assert service.get("169.254.169.5", "/latest/network_data.json").status == 404
    assert cloudmeta.openstack_network_data(None) == {}


def test_the_config_drive_holds_the_same_network_data(paths):
    directory = make_machine(paths, 5, "uuid-5")
    files = configdrive.config_drive_files(directory, FACTORY)
    assert json.loads(files["openstack/latest/network_data.json"]) == \
        cloudmeta.openstack_network_data(5)
