# SPDX-License-Identifier: BSD-2-Clause
"""CernVM image signatures with a real PKI made here (cryptography): a signed image verifies
with the signer's DN in slash form; a changed byte, a foreign CA, an expired signer or no
signature block do not; image_signing_dn refuses such images (and a non-matching DN) in the
libvirt backend before any domain is defined; `vac cernvm-signature` prints and exits so."""
from __future__ import annotations

import base64
import datetime
import json
import os

import pytest

pytest.importorskip("cryptography")
from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding, rsa  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from vac import cli  # noqa: E402
from vac.backends.libvirt import signature  # noqa: E402
from vac.errors import BackendError  # noqa: E402

DAY = datetime.timedelta(days=1)
NOW = datetime.datetime.now(datetime.timezone.utc)
SIGNER_DN = "/DC=ch/DC=cern/OU=computers/CN=cvm-sign01.cern.ch"


def _name(*pairs):
    return x509.Name([x509.NameAttribute(oid, value) for oid, value in pairs])


def _cert(subject, issuer, key, signer_key, ca: bool, start=NOW - DAY, end=NOW + 30 * DAY):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(signer_key, hashes.SHA256())


def _key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    top = tmp_path_factory.mktemp("pki")
    ca_key, other_key, signer_key = _key(), _key(), _key()
    ca_name = _name((NameOID.DOMAIN_COMPONENT, "ch"), (NameOID.DOMAIN_COMPONENT, "cern"),
                    (NameOID.COMMON_NAME, "CERN Grid Certification Authority"))
    ca = _cert(ca_name, ca_name, ca_key, ca_key, True)
    other_name = _name((NameOID.COMMON_NAME, "Some Other CA"))
    other = _cert(other_name, other_name, other_key, other_key, True)
    signer_name = _name((NameOID.DOMAIN_COMPONENT, "ch"), (NameOID.DOMAIN_COMPONENT, "cern"),
                        (NameOID.ORGANIZATIONAL_UNIT_NAME, "computers"),
                        (NameOID.COMMON_NAME, "cvm-sign01.cern.ch"))
    capath = top / "certificates"
    capath.mkdir()
    (capath / "1d879c6c.0").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (capath / "1d879c6c.signing_policy").write_text("not a certificate\n")
    other_capath = top / "other"
    other_capath.mkdir()
    (other_capath / "abcdef01.0").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    return {"ca_key": ca_key, "ca_name": ca_name, "signer_key": signer_key,
            "signer": _cert(signer_name, ca_name, signer_key, ca_key, False),
            "expired": _cert(signer_name, ca_name, signer_key, ca_key, False,
                             NOW - 60 * DAY, NOW - 30 * DAY),
            "capath": str(capath), "other_capath": str(other_capath)}


def _image(path, pki, signer="signer", metadata=b'{"ucernvm-version": "2020.07-1",}',
           sig_json=None) -> str:
    body = os.urandom(100 * 1024)
    meta = metadata.ljust(signature.BLOCK, b"\0")
    digest_input = body + meta
    sig = pki["signer_key"].sign(digest_input, padding.PKCS1v15(), hashes.SHA256())
    cert = pki[signer].public_bytes(serialization.Encoding.PEM)
    if sig_json is None:  # with the missing comma the original's fix-up is for
        sig_json = (b'{"certificate": "' + base64.b64encode(cert) + b'"\n"signature": "' +
                    base64.b64encode(sig) + b'"}')
    with open(path, "wb") as f:
        f.write(digest_input + sig_json.ljust(signature.BLOCK, b"\0"))
    return str(path)


def test_a_signed_image_verifies_with_the_slash_dn_and_version(tmp_path, pki):
    found = signature.read_signature(_image(tmp_path / "cvm.iso", pki), pki["capath"])
    assert found == signature.Signature(True, SIGNER_DN, "2020.07-1")
    assert found.as_dict() == {"verified": True, "dn": SIGNER_DN, "version": "2020.07-1"}


def test_a_changed_byte_breaks_the_signature(tmp_path, pki):
    path = _image(tmp_path / "cvm.iso", pki)
    with open(path, "r+b") as f:
        f.seek(5000)
        byte = f.read(1)
        f.seek(5000)
        f.write(bytes([byte[0] ^ 1]))
    found = signature.read_signature(path, pki["capath"])
    assert not found.verified and found.error == "the signature does not match the image"
    assert found.dn == SIGNER_DN


def test_a_signer_from_another_ca_is_not_verified(tmp_path, pki):
    found = signature.read_signature(_image(tmp_path / "cvm.iso", pki), pki["other_capath"])
    assert not found.verified
    assert found.error == (f"the certificate of {SIGNER_DN} is not issued by a CA in "
                           f"{pki['other_capath']}")


def test_an_expired_signer_is_not_verified(tmp_path, pki):
    found = signature.read_signature(_image(tmp_path / "cvm.iso", pki, "expired"),
                                     pki["capath"])
    assert not found.verified and "is not valid now" in found.error


def test_no_signature_block_and_small_files(tmp_path, pki):
    plain = tmp_path / "plain.iso"
    plain.write_bytes(os.urandom(200 * 1024))
    found = signature.read_signature(str(plain), pki["capath"])
    assert not found.verified and found.error.startswith("no valid signature block")
    small = tmp_path / "small.iso"
    small.write_bytes(b"x" * 1000)
    assert "too small" in signature.read_signature(str(small), pki["capath"]).error
    assert "cannot read" in signature.read_signature(str(tmp_path / "no"), pki["capath"]).error


def test_enforce_refuses_unverified_and_mismatched_and_allows_matching(tmp_path, pki):
    good = _image(tmp_path / "cvm.iso", pki)
    assert signature.enforce(good, None, "m1", pki["capath"]) is None
    assert signature.enforce(good, r"^/DC=ch/DC=cern/.*CN=cvm-sign01\.cern\.ch$", "m1",
                             pki["capath"]).verified
    with pytest.raises(BackendError) as caught:
        signature.enforce(good, r"/CN=someone-else", "m1", pki["capath"])
    assert f"signed by {SIGNER_DN}, which does not match image_signing_dn" in str(caught.value)
    plain = tmp_path / "plain.iso"
    plain.write_bytes(os.urandom(200 * 1024))
    with pytest.raises(BackendError) as caught:
        signature.enforce(str(plain), "cern", "m1", pki["capath"])
    assert "its CernVM signature is not verified" in str(caught.value)
    with pytest.raises(BackendError, match="not a valid regular expression"):
        signature.enforce(good, "(", "m1", pki["capath"])


def test_the_libvirt_backend_refuses_before_defining_a_domain(tmp_path, pki, make_config,
                                                              monkeypatch):
    from vac.backends.base import MachineSpec
    from vac.backends.libvirt.backend import LibvirtBackend
    from vac.machine.directory import MachineDir
    from vac.machine.slots import Slot, machine_name

    config = make_config(f"""
        [settings]
        vac_space = vac01.example.com
        factory_name = f1.example.com

        [machinetype cvm]
        machine_model = cernvm3
        root_image = {tmp_path}/plain.iso
        image_signing_dn = ^/DC=ch/DC=cern/
        target_share = 1
        """)
    (tmp_path / "plain.iso").write_bytes(os.urandom(200 * 1024))
    monkeypatch.setattr(signature, "CA_PATH", pki["capath"])
    mt = config.machinetypes["cvm"]
    slot = Slot(0, machine_name("f1.example.com", 0))
    d = MachineDir.create(config.settings.paths, 1000, "cvm", slot.name)
    spec = MachineSpec(name=slot.name, machinetype=mt, settings=config.settings, slot=slot,
                       processors=1, memory_mb=256, created=1000, shutdown_time=2000,
                       uuid="u", directory=d)
    backend = LibvirtBackend(config.settings)
    with pytest.raises(BackendError) as caught:
        backend._disks(spec)
    assert "refused: its CernVM signature is not verified" in str(caught.value)
    assert os.listdir(config.settings.paths.tmp) == []


def test_vac_cernvm_signature_prints_json_and_exits(tmp_path, pki, capsys):
    good = _image(tmp_path / "cvm.iso", pki)
    assert cli.main(["cernvm-signature", good, "--capath", pki["capath"]]) == 0
    assert json.loads(capsys.readouterr().out)["dn"] == SIGNER_DN
    assert cli.main(["cernvm-signature", good, "--capath", pki["other_capath"]]) == 1
    assert json.loads(capsys.readouterr().out)["verified"] is False
    with pytest.raises(SystemExit) as caught:
        cli.main(["cernvm-signature"])
    assert caught.value.code == 2
