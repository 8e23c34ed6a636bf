# SPDX-License-Identifier: BSD-2-Clause
"""What the metadata service answers for cloud-init besides the machine's context:
the EC2 `network` tree of the VM's one interface, OpenStack vendor data `{}`."""
from __future__ import annotations


from metadatamachines import FACTORY, make_machine

from vac.backends.libvirt import cloudmeta, metadata


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
