# SPDX-License-Identifier: BSD-2-Clause
"""The VM metadata/MJF/joboutputs HTTP service, over a real HTTP server on 127.0.0.1."""
from __future__ import annotations

import http.client
import json
import os
import socket

import pytest
from metadatamachines import FACTORY, KEY, make_machine

from vac.backends.libvirt import metadata

class Client:
    """Talks to the server as the VM at `self.address` (through the service's override)."""

    def __init__(self, port):
        self.port = port
        self.address = "169.254.169.3"

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read(), resp.getheader("Content-Type")
        finally:
            conn.close()

    def get(self, path):
        status, body, _ = self.request("GET", path)
        return status, body.decode()

    def put(self, path, body):
        return self.request("PUT", path, body=body)[0]

    def raw(self, data: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return b"".join(chunks)
                chunks.append(chunk)


@pytest.fixture
def vms(paths):
    return {3: make_machine(paths, 3, "11111111-2222-4333-8444-555555555503"),
            5: make_machine(paths, 5, "11111111-2222-4333-8444-555555555505",
                        user_data="#!/bin/sh\necho five\n")}


@pytest.fixture
def client(paths, vms):
    holder = {}
    service = metadata.MetadataService(paths, FACTORY,
                                       client_address=lambda peer: holder["c"].address,
                                       max_put_bytes=1000)
    server = metadata.serve(service, "127.0.0.1", 0)
    holder["c"] = Client(server.server_address[1])
    yield holder["c"]
    server.shutdown()
    server.server_close()


def test_user_data_both_spellings_dated_and_latest(client, vms):
    for path in ("/latest/user-data", "/latest/user_data", "/2009-04-04/user-data",
                 "/openstack/latest/user_data", "/openstack/latest/user-data",
                 "/openstack/2018-08-27/user_data", "//latest//user-data"):
        assert client.get(path) == (200, "#!/bin/sh\necho hi\n"), path


def test_each_vm_is_answered_only_about_itself(client, vms):
    client.address = "169.254.169.5"
    assert client.get("/latest/user-data") == (200, "#!/bin/sh\necho five\n")
    assert client.get("/latest/meta-data/instance-id")[1] == \
        "11111111-2222-4333-8444-555555555505"
    assert client.get("/machinefeatures/total_cpu") == (200, "15")
    client.address = "169.254.169.3"
    assert client.get("/machinefeatures/total_cpu") == (200, "13")


@pytest.mark.parametrize("address", ["10.1.2.3", "169.254.169.7", "169.254.170.3",
                                     "169.254.169.253", "169.254.169.03", "::1"])
def test_other_addresses_get_404_and_403(client, vms, address):
    client.address = address
    for path in ("/latest/user-data", "/machinefeatures/total_cpu", "/latest/meta-data",
                 "/openstack/latest/meta_data.json", "/"):
        assert client.get(path)[0] == 404, path
    assert client.put("/joboutputs/shutdown_message", b"300 x") == 403
    assert not os.path.exists(vms[3].file("joboutputs/shutdown_message"))


def test_finished_machine_is_not_answered(client, vms):
    vms[3].write("finished", "")
    assert client.get("/latest/user-data")[0] == 404
    assert client.put("/joboutputs/shutdown_message", b"300 late") == 403


def test_meta_data_json_both_spellings(client, vms):
    for path in ("/latest/meta-data.json", "/latest/meta_data.json",
                 "/openstack/latest/meta_data.json", "/openstack/2012-08-10/meta-data.json"):
        status, body, kind = client.request("GET", path)
        assert status == 200 and kind == "application/json", path
        data = json.loads(body)
        assert data["uuid"] == "11111111-2222-4333-8444-555555555503"
        assert data["hostname"] == data["name"] == "f1-03.example.com"
        assert data["availability_zone"] == FACTORY
        assert data["public_keys"] == {"0": KEY + "\n"}
        assert data["meta"] == {
            "machinefeatures": "http://169.254.169.253/machinefeatures",
            "jobfeatures": "http://169.254.169.253/jobfeatures",
            "joboutputs": "http://169.254.169.253/joboutputs", "machinetype": "vmtype"}


def test_ec2_meta_data_listing_and_leaves(client, vms):
    for path in ("/latest/meta-data", "/latest/meta-data/", "/openstack/latest/meta-data/"):
        status, body = client.get(path)
        lines = body.split("\n")
        assert status == 200
        assert {"ami-id", "instance-id", "public-keys/0/openssh-key"} <= set(lines), path
    uuid = "11111111-2222-4333-8444-555555555503"
    assert client.get("/latest/meta-data/instance-id") == (200, uuid)
    assert client.get("/latest/meta-data/ami-id") == (200, uuid)
    assert client.get("/2009-04-04/meta-data/public-keys/0/openssh-key") == (200, KEY + "\n")
    assert client.get("/latest/meta-data/public-keys") == (200, "0=vac")
    assert client.get("/latest/meta-data/public-keys/0/") == (200, "openssh-key")
    assert client.get("/latest/meta-data/local-hostname") == (200, "f1-03.example.com")
    assert client.get("/latest/meta-data/placement/availability-zone") == (200, FACTORY)
    assert client.get("/latest/meta-data/nonesuch")[0] == 404


def test_version_listings(client, vms):
    status, body = client.get("/")
    assert status == 200 and {"2009-04-04", "latest", "1.0"} <= set(body.split("\n"))
    status, body = client.get("/openstack")
    assert status == 200 and {"2012-08-10", "2018-08-27", "latest"} <= set(body.split("\n"))
    assert client.get("/openstack/latest") == (200, "meta_data.json\nuser_data")
    assert client.get("/latest/") == (200, "meta-data\nuser-data")
    assert client.get("/notadate/user-data")[0] == 404


def test_user_data_absent_is_404(client, vms):
    vms[3].remove("user_data")
    assert client.get("/latest/user-data")[0] == 404
    assert client.get("/openstack/latest") == (200, "meta_data.json")


def test_mjf_listing_and_values(client, vms):
    status, body, kind = client.request("GET", "/machinefeatures")
    assert status == 200 and kind == "text/html"
    assert body.decode() == ('<html><body><ul><li><a href="hs06">hs06</a></li>'
                             '<li><a href="total_cpu">total_cpu</a></li></ul></body></html>')
    assert client.get("/jobfeatures/")[1].count("<li>") == 2
    status, body, kind = client.request("GET", "/jobfeatures/allocated_cpu")
    assert (status, body, kind) == (200, b"3\n", "text/plain")
    assert client.get("/machinefeatures/nonesuch")[0] == 404
    assert client.get("/machinefeatures/total_cpu/x")[0] == 404
    assert client.get("/machinefeatures/../user_data")[0] == 404
    assert client.get("/joboutputs/shutdown_message")[0] == 404


def test_mjf_symlink_is_not_followed(client, vms, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    os.symlink(str(secret), vms[3].file("machinefeatures/leak"))
    assert client.get("/machinefeatures/leak")[0] == 404
    assert "leak" not in client.get("/machinefeatures")[1]


def test_put_joboutput_stores_in_own_directory(client, vms):
    assert client.put("/joboutputs/shutdown_message", b"100 Shutdown as requested\n") == 201
    assert vms[3].shutdown_message == "100 Shutdown as requested"
    assert not os.path.exists(vms[5].file("joboutputs/shutdown_message"))
    assert client.put("/joboutputs/shutdown_message", b"300 Nothing to do") == 201
    assert vms[3].shutdown_message == "300 Nothing to do"
    assert sorted(os.listdir(vms[3].file("joboutputs"))) == ["shutdown_message"]


@pytest.mark.parametrize("path", [
    "/joboutputs/a/b", "/joboutputs/../user_data", "/joboutputs/..", "/joboutputs/.hidden",
    "/joboutputs/", "/joboutputs", "/joboutputs/%2e%2e", "/joboutputs/a%2fb",
    "/machinefeatures/total_cpu", "/user_data", "/joboutputs/./x",
])
def test_put_outside_one_joboutputs_component_is_refused(client, vms, path):
    assert client.put(path, b"evil") == 403
    assert os.listdir(vms[3].file("joboutputs")) == []
    assert vms[3].read("user_data") == "#!/bin/sh\necho hi\n"
    assert vms[3].read("machinefeatures/total_cpu") == "13"


def test_put_needs_content_length_and_is_bounded(client, vms):
    reply = client.raw(b"PUT /joboutputs/x HTTP/1.0\r\n\r\nbody")
    assert reply.split(b" ")[1] == b"411"
    assert client.put("/joboutputs/big", b"x" * 1001) == 413
    assert client.put("/joboutputs/fits", b"x" * 1000) == 201
    assert sorted(os.listdir(vms[3].file("joboutputs"))) == ["fits"]


def test_put_answers_expect_100_continue(client, vms):
    with socket.create_connection(("127.0.0.1", client.port), timeout=5) as s:
        s.sendall(b"PUT /joboutputs/log HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert s.recv(1024).startswith(b"HTTP/1.1 100")
        s.sendall(b"hello")
        assert s.recv(1024).startswith(b"HTTP/1.1 201")
    assert vms[3].read("joboutputs/log") == "hello"


def test_put_does_not_follow_symlinks(client, vms, tmp_path):
    outside = tmp_path / "outside"
    outside.write_text("keep")
    os.symlink(str(outside), vms[3].file("joboutputs/shutdown_message"))
    assert client.put("/joboutputs/shutdown_message", b"100 ok") == 201
    assert outside.read_text() == "keep"
    assert not os.path.islink(vms[3].file("joboutputs/shutdown_message"))
    assert vms[3].shutdown_message == "100 ok"


def test_put_into_symlinked_joboutputs_directory_is_refused(client, vms, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.rmdir(vms[3].file("joboutputs"))
    os.symlink(str(elsewhere), vms[3].file("joboutputs"))
    assert client.put("/joboutputs/shutdown_message", b"100 ok") == 403
    assert os.listdir(str(elsewhere)) == []


def test_server_banner_and_head(client, vms):
    conn = http.client.HTTPConnection("127.0.0.1", client.port, timeout=10)
    conn.request("HEAD", "/latest/user-data")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Server").startswith("Vac metadata server")
    assert resp.getheader("Content-Length") == str(len("#!/bin/sh\necho hi\n"))
    conn.close()


def test_ordinal_from_address():
    assert metadata.ordinal_from_address("169.254.169.0") == 0
    assert metadata.ordinal_from_address("169.254.169.99") == 99
    assert metadata.ordinal_from_address("169.254.169.252") == 252
    for bad in ("169.254.169.253", "169.254.169.254", "169.254.169.007", "169.254.168.1",
                "1169.254.169.1", "169.254.169.", "::ffff:169.254.169.1"):
        assert metadata.ordinal_from_address(bad) is None, bad


def test_servers_report_unbindable_addresses(paths):
    service = metadata.MetadataService(paths, FACTORY)
    servers = metadata.MetadataServers(service, addresses=("127.0.0.1", "192.0.2.254"), port=0)
    try:
        problems = servers.ensure()
        assert list(servers.servers) == ["127.0.0.1"]
        assert len(problems) == 1 and "192.0.2.254" in problems[0]
        assert servers.ensure() == problems      # retried, still absent, nothing rebound
    finally:
        servers.close()
