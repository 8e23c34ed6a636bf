# SPDX-License-Identifier: BSD-2-Clause
"""GOCDB publishing against a local HTTPS server playing the GOCDB PI (certificates made here
with `cryptography`; the server demands the client certificate): lookup, PUT of the capacity
and VO shares, failures, and the at-most-daily schedule with its random phase."""
from __future__ import annotations

import datetime
import http.server
import json
import os
import random
import ssl
import threading
import urllib.parse

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from fakeclock import T0

from vac.accounting import gocdb
from vac.errors import FetchError

PORT = 19156
REPLY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<results>\n'
         b'<SERVICE_ENDPOINT PRIMARY_KEY="4321G0"><HOSTNAME>vac01.example.com</HOSTNAME>'
         b'<SERVICE_TYPE>uk.ac.gridpp.vac</SERVICE_TYPE></SERVICE_ENDPOINT>\n</results>\n')


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, issuer_name, issuer_key, key, ca=False, san=None):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(_name(issuer_name)).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(hours=1))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path, cert, key):
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return str(path.with_suffix(".pem")), str(path.with_suffix(".key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("Test CA", "Test CA", ca_key, ca_key, ca=True)
    ca_file, _ = _write(d / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", "Test CA", ca_key, server_key,
                   san=[x509.DNSName("localhost")])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert("vac01.example.com", "Test CA", ca_key, client_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _cert("stranger", "stranger", other_key, other_key)
    return {"ca": ca_file, "server": _write(d / "server", server, server_key),
            "client": _write(d / "client", client, client_key),
            "stranger": _write(d / "stranger", other, other_key)}


@pytest.fixture
def gocdb_server(pki):
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, code, body=b""):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            peer = self.connection.getpeercert()
            seen.append(("GET", self.path, None, peer))
            ok = self.path.startswith("/gocdbpi/public/?")
            self._reply(200 if ok else 404, REPLY if ok else b"")

        def do_PUT(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(("PUT", self.path, body, self.connection.getpeercert()))
            self._reply(204 if self.path == "/gocdbpi/v5/Service/4321/ExtensionProperties"
                        else 403)

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki["server"])
    context.load_verify_locations(pki["ca"])
    context.verify_mode = ssl.CERT_REQUIRED
    server = http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield seen
    server.shutdown()
    server.server_close()


def settings_for(pki, client="client"):
    cert, key = pki[client]
    return (f"gocdb_sitename = UKI-EXAMPLE\nhs06_per_processor = 10\n"
            f"gocdb_cert_file = {cert}\ngocdb_key_file = {key}\n"
            f"gocdb_url = https://localhost:{PORT}/gocdbpi")


def test_publish_looks_up_the_service_and_puts_capacity_and_shares(world, pki,
                                                                     gocdb_server):
    w = world(settings=settings_for(pki))
    w.paths.ensure()
    catalogue = {"f2.example.com": {"max_processors": 8, "max_machines": 8, "max_hs06": 80},
                 "f3.example.com": {"max_processors": 4}}            # malformed: skipped
    with open(os.path.join(w.paths.state_dir, gocdb.CATALOGUE), "w") as f:
        json.dump(catalogue, f)
    assert gocdb.publish(w.load(), T0, cafile=pki["ca"]) == "4321"
    (get, path, _, peer), (put, put_path, body, put_peer) = gocdb_server
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    assert query == {"method": ["get_service_endpoint"], "sitename": ["UKI-EXAMPLE"],
                     "hostname": ["vac01.example.com"], "service_type": ["uk.ac.gridpp.vac"]}
    assert dict(x[0] for x in peer["subject"])["commonName"] == "vac01.example.com"
    assert put == "PUT" and put_path == "/gocdbpi/v5/Service/4321/ExtensionProperties"
    sent = json.loads(body)
    assert sent == {
        "ComputingManagerCreationTime": "2023-11-14T22:13:20Z",
        "ComputingManagerProductName": "Vac",
        "ComputingManagerProductVersion": sent["ComputingManagerProductVersion"],
        "ComputingManagerTotalLogicalCPUs": "10", "ComputingManagerTotalSlots": "10",
        "ComputingManagerTotalPhysicalCPUs": "2", "BenchmarkType": "specint2000",
        "BenchmarkValue": str((80 + 20) * 250),
        "ComputingManagerOtherInfo": "Share=lhcb:100",
        "PolicyRule": "VOMS:/lhcb/Role=pilot", "PolicyScheme": "org.glite.standard"}


def test_a_certificate_the_server_does_not_trust_fails(world, pki, gocdb_server):
    w = world(settings=settings_for(pki, "stranger"))
    w.paths.ensure()
    with pytest.raises(FetchError):
        gocdb.publish(w.load(), T0, cafile=pki["ca"])
    assert gocdb_server == []
    w2 = world(settings=settings_for(pki))
    with pytest.raises(FetchError):             # and a server we do not trust is refused
        gocdb.publish(w2.load(), T0, cafile=pki["stranger"][0])


def test_a_reply_without_a_service_or_with_a_dtd_is_an_error():
    with pytest.raises(FetchError, match="no SERVICE_ENDPOINT"):
        gocdb.service_id(b"<results></results>")
    with pytest.raises(FetchError, match="DTD"):
        gocdb.service_id(b'<!DOCTYPE x [<!ENTITY a "b">]>' + REPLY)
    assert gocdb.service_id(REPLY) == "4321"


def test_updates_are_at_most_daily_with_a_random_phase(world, pki):
    w = world(settings=settings_for(pki))
    w.paths.ensure()
    calls = []

    def transport(method, url, body, cert, key, cafile):
        calls.append(method)
        return (200, REPLY) if method == "GET" else (204, b"")

    config = w.load()
    rng = random.Random(7)
    phase = random.Random(7).uniform(0, 86400)
    assert not gocdb.update_if_due(config, T0, transport, rng)     # marker set, phase chosen
    marker = os.path.join(w.paths.state_dir, gocdb.MARKER)
    assert abs(os.stat(marker).st_mtime - (T0 - phase)) < 1
    assert not gocdb.update_if_due(config, T0 - phase + 86000, transport, rng)
    assert gocdb.update_if_due(config, T0 - phase + 86401, transport, rng)
    assert calls == ["GET", "PUT"]
    assert not gocdb.update_if_due(config, T0 - phase + 86401 + 3600, transport, rng)
    assert gocdb.interval(24) == 86400 and gocdb.interval(48) == 2 * 86400


def test_nothing_is_published_without_certificate_files(world):
    w = world(settings="gocdb_sitename = X\ngocdb_cert_file = /nonexistent\n"
                       "gocdb_key_file = /nonexistent")
    w.paths.ensure()
    assert not gocdb.update_if_due(w.load(), T0, lambda *a: pytest.fail("called"))
