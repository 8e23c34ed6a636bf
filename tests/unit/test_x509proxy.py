# SPDX-License-Identifier: BSD-2-Clause
"""X.509 limited proxies signed by a CA and host certificate made here in the test."""
from __future__ import annotations

import datetime
import os
import shutil

import pytest

cryptography = pytest.importorskip("cryptography")

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from cryptography.x509.oid import ExtensionOID, NameOID  # noqa: E402

from vac import subp  # noqa: E402
from vac.errors import UserDataError  # noqa: E402
from vac.machine.x509proxy import (  # noqa: E402
    LIMITED_PROXY_POLICY_OID,
    PROXY_CERT_INFO_OID,
    make_proxy,
    proxy_cert_info_der,
)

NOW = 1_700_000_000
DAY = 86400
PEM = serialization.Encoding.PEM


def _utc(t):
    return datetime.datetime.fromtimestamp(t, tz=datetime.timezone.utc)


def _name(*pairs):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def _sign(subject, issuer, public_key, signing_key, not_before, not_after, ca):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(x509.random_serial_number())
               .not_valid_before(_utc(not_before)).not_valid_after(_utc(not_after))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=not ca,
                   data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                   crl_sign=ca, encipher_only=False, decipher_only=False), critical=True))
    return builder.sign(signing_key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki():
    """A CA and a host certificate it signed, valid from NOW - 1 day for 30 days."""
    start = min(NOW, int(datetime.datetime.now().timestamp())) - DAY
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = _name((NameOID.DOMAIN_COMPONENT, "org"), (NameOID.DOMAIN_COMPONENT, "example"),
                    (NameOID.COMMON_NAME, "Test CA"))
    ca = _sign(ca_name, ca_name, ca_key.public_key(), ca_key, start,
               int(datetime.datetime.now().timestamp()) + 3650 * DAY, ca=True)
    host_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    host_name = _name((NameOID.COUNTRY_NAME, "UK"), (NameOID.ORGANIZATION_NAME, "eScience"),
                      (NameOID.ORGANIZATIONAL_UNIT_NAME, "Manchester"),
                      (NameOID.COMMON_NAME, "vac01.example.com"))
    host_not_after = max(NOW, int(datetime.datetime.now().timestamp())) + 30 * DAY
    host = _sign(host_name, ca_name, host_key.public_key(), ca_key, start, host_not_after,
                 ca=False)
    return {"ca": ca, "host": host, "host_key": host_key, "host_not_after": host_not_after}


@pytest.fixture
def mt_dir(tmp_path, pki):
    """A machinetype directory with x509cert.pem (host cert + CA) and x509key.pem."""
    (tmp_path / "x509cert.pem").write_bytes(pki["host"].public_bytes(PEM)
                                            + pki["ca"].public_bytes(PEM))
    (tmp_path / "x509key.pem").write_bytes(pki["host_key"].private_bytes(
        PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()))
    return tmp_path


def _paths(d):
    return str(d / "x509cert.pem"), str(d / "x509key.pem")


def _split(pem):
    blocks, current = [], []
    for line in pem.splitlines(keepends=True):
        current.append(line)
        if line.startswith("-----END "):
            blocks.append("".join(current))
            current = []
    assert not "".join(current).strip()
    return blocks


def _not_after(cert):
    when = getattr(cert, "not_valid_after_utc", None)
    return int((when or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)).timestamp())


def _not_before(cert):
    when = getattr(cert, "not_valid_before_utc", None)
    return int((when or cert.not_valid_before.replace(
        tzinfo=datetime.timezone.utc)).timestamp())


def test_rfc_proxy(mt_dir, pki):
    expires = NOW + DAY
    pem = make_proxy(*_paths(mt_dir), expires, cn="lhcb-prod", now=NOW + 0.25)
    blocks = _split(pem)
    assert [b.splitlines()[0] for b in blocks] == [
        "-----BEGIN CERTIFICATE-----", "-----BEGIN PRIVATE KEY-----",
        "-----BEGIN CERTIFICATE-----", "-----BEGIN CERTIFICATE-----"]
    proxy = x509.load_pem_x509_certificate(blocks[0].encode())
    key = serialization.load_pem_private_key(blocks[1].encode(), password=None)
    assert x509.load_pem_x509_certificate(blocks[2].encode()) == pki["host"]
    assert x509.load_pem_x509_certificate(blocks[3].encode()) == pki["ca"]

    host = pki["host"]
    assert proxy.issuer == host.subject
    assert proxy.subject == x509.Name(list(host.subject.rdns) + [x509.RelativeDistinguishedName(
        [x509.NameAttribute(NameOID.COMMON_NAME, "lhcb-prod")])])
    assert proxy.version == x509.Version.v3
    assert proxy.serial_number == int((NOW + 0.25) * 100)
    assert _not_before(proxy) == NOW
    assert _not_after(proxy) == expires
    assert key.key_size == 2048
    assert key.public_key().public_numbers() == proxy.public_key().public_numbers()

    ku = proxy.extensions.get_extension_for_oid(ExtensionOID.KEY_USAGE)
    assert ku.critical
    assert (ku.value.digital_signature, ku.value.key_encipherment, ku.value.key_agreement) \
        == (True, True, True)
    assert not ku.value.key_cert_sign
    pci = proxy.extensions.get_extension_for_oid(x509.ObjectIdentifier(PROXY_CERT_INFO_OID))
    assert pci.critical
    assert pci.value.value == proxy_cert_info_der()
    assert len(proxy.extensions) == 2

    host.public_key().verify(proxy.signature, proxy.tbs_certificate_bytes,
                             padding.PKCS1v15(), hashes.SHA256())
    assert proxy.signature_hash_algorithm.name == "sha256"


def test_proxy_cert_info_der_is_the_limited_proxy_language():
    # SEQUENCE { SEQUENCE { OID 1.3.6.1.4.1.3536.1.1.1.9 } }
    assert proxy_cert_info_der() == bytes.fromhex("300f300d060b2b060104019b50010101 09"
                                                  .replace(" ", ""))
    assert LIMITED_PROXY_POLICY_OID == "1.3.6.1.4.1.3536.1.1.1.9"


def test_legacy_proxy(mt_dir, pki):
    pem = make_proxy(*_paths(mt_dir), NOW + DAY, cn="ignored", legacy=True, now=NOW)
    proxy = x509.load_pem_x509_certificate(_split(pem)[0].encode())
    cns = proxy.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert [a.value for a in cns] == ["vac01.example.com", "limited proxy"]
    oids = {e.oid.dotted_string for e in proxy.extensions}
    assert oids == {ExtensionOID.KEY_USAGE.dotted_string}


def test_rfc_proxy_without_cn_uses_the_timestamp(mt_dir):
    pem = make_proxy(*_paths(mt_dir), NOW + 12 * 3600, now=NOW)
    proxy = x509.load_pem_x509_certificate(_split(pem)[0].encode())
    cns = proxy.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert cns[-1].value == str(NOW * 100)


def test_signer_expiring_before_the_machine_is_refused(mt_dir, pki):
    with pytest.raises(UserDataError, match="expires"):
        make_proxy(*_paths(mt_dir), pki["host_not_after"] + 1, cn="lhcb", now=NOW)
    # exactly at the signer's expiry is fine
    make_proxy(*_paths(mt_dir), pki["host_not_after"], cn="lhcb", now=NOW)


def test_key_not_matching_the_certificate_is_refused(mt_dir):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (mt_dir / "x509key.pem").write_bytes(other.private_bytes(
        PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(UserDataError, match="not the key"):
        make_proxy(*_paths(mt_dir), NOW + DAY, cn="lhcb", now=NOW)


@pytest.mark.parametrize("which, content, message", [
    ("x509cert.pem", None, "cannot read"),
    ("x509key.pem", None, "cannot read"),
    ("x509cert.pem", b"not a certificate\n", "no PEM certificate"),
    ("x509key.pem", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
     "private key"),
])
def test_bad_files_are_user_data_errors(mt_dir, which, content, message):
    if content is None:
        os.unlink(mt_dir / which)
    else:
        (mt_dir / which).write_bytes(content)
    with pytest.raises(UserDataError, match=message) as info:
        make_proxy(*_paths(mt_dir), NOW + DAY, cn="lhcb", now=NOW)
    assert which in str(info.value)


def test_encrypted_key_is_refused(mt_dir, pki):
    (mt_dir / "x509key.pem").write_bytes(pki["host_key"].private_bytes(
        PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    with pytest.raises(UserDataError, match="unencrypted"):
        make_proxy(*_paths(mt_dir), NOW + DAY, cn="lhcb", now=NOW)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_openssl_accepts_the_rfc_proxy_chain(mt_dir, tmp_path):
    """OpenSSL's own proxy path validation (subject = issuer + one CN, signed by the EEC)."""
    now = int(datetime.datetime.now().timestamp())
    pem = make_proxy(*_paths(mt_dir), now + 3600, cn="lhcb-prod", now=now - 60)
    blocks = _split(pem)
    (tmp_path / "proxy.pem").write_text(blocks[0])
    (tmp_path / "untrusted.pem").write_text(blocks[2])
    (tmp_path / "ca.pem").write_text(blocks[3])
    done = subp.run(["openssl", "verify", "-allow_proxy_certs", "-CAfile",
                     str(tmp_path / "ca.pem"), "-untrusted", str(tmp_path / "untrusted.pem"),
                     str(tmp_path / "proxy.pem")], timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "proxy.pem: OK" in done.stdout
