# SPDX-License-Identifier: BSD-2-Clause
"""CernVM image signatures, checked as the original did: read, verify, and enforce image_signing_dn.

A signed CernVM ISO ends with two 32 KiB blocks: a JSON metadata block (its `ucernvm-version`
is the image's version), then a JSON signature block with the base64 PEM `certificate` of the
signer and the base64 RSA `signature` of the SHA-256 of everything before the signature block.
The certificate must chain to a CA in /etc/grid-security/certificates (what the original asked
`openssl verify -CApath` for; done here with `cryptography`, never a shell). The DN is given in
OpenSSL's slash form, which is what image_signing_dn regular expressions are written against.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from vac import optional
from vac.errors import BackendError
from vac.paths import GRID_CA_DIR

BLOCK = 32 * 1024
MIN_SIZE = 2 * BLOCK
CA_PATH = GRID_CA_DIR
MAX_CHAIN = 10
MAX_CA_FILES = 5000
MAX_CA_BYTES = 256 * 1024
SHORT_NAMES = {"2.5.4.6": "C", "2.5.4.8": "ST", "2.5.4.7": "L", "2.5.4.10": "O",
               "2.5.4.11": "OU", "2.5.4.3": "CN", "0.9.2342.19200300.100.1.25": "DC",
               "1.2.840.113549.1.9.1": "emailAddress", "0.9.2342.19200300.100.1.1": "UID",
               "2.5.4.5": "serialNumber"}


@dataclass(frozen=True)
class Signature:
    """What `vac cernvm-signature` prints: verified, the signer's DN, the image's version."""

    verified: bool
    dn: Optional[str] = None
    version: Optional[str] = None
    error: Optional[str] = None

    def as_dict(self) -> dict:
        found = {"verified": self.verified}
        found.update({k: v for k, v in (("dn", self.dn), ("version", self.version),
                                        ("error", self.error)) if v is not None})
        return found


def _block_json(raw: bytes, what: str) -> dict:
    text = raw.replace(b"\0", b"").decode("utf-8", "replace").strip()
    text = re.sub(r",\s*}", "}", text)                          # the known stray comma
    text = re.sub(r'("|\d|true|false|null)(\s*\n\s*")', r"\1,\2", text)  # missing commas
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ValueError(f"the {what} block is not JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"the {what} block is not a JSON object")
    return value


def read_signature(path: str, ca_path: str = CA_PATH,
                   now: Optional[float] = None) -> Signature:
    """Verify a CernVM image's signature; never raises for a bad image (error says why)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= MIN_SIZE:
                return Signature(False, error=f"{path} is too small to carry a signature")
            digest, metadata, sig_block = _read_blocks(f, size)
    except OSError as e:
        return Signature(False, error=f"cannot read {path}: {e.strerror or e}")
    version = None
    try:
        meta = _block_json(metadata, "metadata")
        version = meta.get("ucernvm-version")
        version = str(version) if version is not None else None
        sig = _block_json(sig_block, "signature")
        cert_pem = base64.b64decode(str(sig["certificate"]), validate=False)
        signature = base64.b64decode(str(sig["signature"]), validate=False)
    except (ValueError, KeyError, binascii.Error) as e:
        return Signature(False, version=version, error=f"no valid signature block: {e}")
    if not optional.installed("cryptography"):
        return Signature(False, version=version, error="the Python module cryptography is not "
                         f"installed: {optional.LIBRARIES['cryptography'].install()}")
    return _verify(cert_pem, signature, digest, version, ca_path, now)


def _read_blocks(f, size: int) -> Tuple[bytes, bytes, bytes]:
    """(SHA-256 of all but the last block, the metadata block, the signature block)."""
    sha = hashlib.sha256()
    remaining = size - BLOCK
    while remaining > 0:
        chunk = f.read(min(1 << 20, remaining))
        if not chunk:
            raise OSError("file shrank while being read")
        sha.update(chunk)
        remaining -= len(chunk)
    f.seek(size - 2 * BLOCK)
    metadata = f.read(BLOCK)
    return sha.digest(), metadata, f.read(BLOCK)


def _verify(cert_pem: bytes, signature: bytes, digest: bytes, version: Optional[str],
            ca_path: str, now: Optional[float]) -> Signature:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        return Signature(False, version=version, error=f"the signer's certificate: {e}")
    dn = slash_dn(cert.subject)
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        return Signature(False, dn, version, "the signer's key is not RSA")
    try:
        key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
    except InvalidSignature:
        return Signature(False, dn, version, "the signature does not match the image")
    problem = verify_chain(cert, ca_path, now)
    if problem:
        return Signature(False, dn, version, problem)
    return Signature(True, dn, version)


def slash_dn(name) -> str:
    """An X.509 name in OpenSSL's slash form: /DC=ch/DC=cern/OU=.../CN=..."""
    parts = []
    for rdn in name.rdns:
        for attr in rdn:
            label = SHORT_NAMES.get(attr.oid.dotted_string, attr.oid.dotted_string)
            parts.append(f"/{label}={attr.value}")
    return "".join(parts)


def _ca_certificates(ca_path: str) -> List:
    from cryptography import x509

    found = []
    try:
        names = sorted(os.listdir(ca_path))[:MAX_CA_FILES]
    except OSError:
        return found
    for name in names:
        if not re.fullmatch(r"[0-9a-f]{8}\.\d+|.+\.pem", name):
            continue
        path = os.path.join(ca_path, name)
        try:
            if os.path.getsize(path) > MAX_CA_BYTES:
                continue
            with open(path, "rb") as f:
                found.extend(x509.load_pem_x509_certificates(f.read()))
        except (OSError, ValueError):
            continue
    return found


def verify_chain(cert, ca_path: str = CA_PATH, now: Optional[float] = None) -> str:
    """"" if cert chains to a self-signed CA in ca_path, all valid at now; else why not."""
    cas = _ca_certificates(ca_path)
    if not cas:
        return f"no CA certificates in {ca_path}"
    when = datetime.datetime.fromtimestamp(
        now if now is not None else datetime.datetime.now().timestamp(), datetime.timezone.utc)
    current = cert
    for _ in range(MAX_CHAIN):
        problem = _validity(current, when)
        if problem:
            return problem
        issuer = _issuer_of(current, cas)
        if issuer is None:
            return (f"the certificate of {slash_dn(current.subject)} is not issued by a CA in "
                    f"{ca_path}")
        if issuer.subject == issuer.issuer:  # a self-signed root of the store: the end
            return _validity(issuer, when)
        current = issuer
    return f"the chain is longer than {MAX_CHAIN}"


def _issuer_of(cert, cas: List):
    for ca in cas:
        if ca.subject != cert.issuer:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # noqa: BLE001 (InvalidSignature, an unsupported key or algorithm)
            continue
        return ca
    return None


def _validity(cert, when: datetime.datetime) -> str:
    start = getattr(cert, "not_valid_before_utc", None) or \
        cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)
    end = getattr(cert, "not_valid_after_utc", None) or \
        cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    if not start <= when <= end:
        return f"the certificate of {slash_dn(cert.subject)} is not valid now (valid " \
               f"{start:%Y-%m-%d} to {end:%Y-%m-%d})"
    return ""


_cache: Dict[Tuple, Signature] = {}
_cache_lock = threading.Lock()


def enforce(path: str, pattern: Optional[str], machine: Optional[str] = None,
            ca_path: Optional[str] = None) -> Optional[Signature]:
    """At creation: with image_signing_dn set, refuse an image that is not verified or whose
    signer's DN does not match it (BackendError saying which). Verifications are cached by
    the file's identity (device, inode, size, mtime), so an unchanged image is hashed once."""
    if not pattern:
        return None
    if not optional.installed("cryptography"):
        raise BackendError("libvirt", optional.MissingLibrary.of(
            "image_signing_dn", "cryptography").text(), machine)
    ca_path = ca_path or CA_PATH
    try:
        st = os.stat(path)
    except OSError as e:
        raise BackendError("libvirt", f"root_image {path}: {e.strerror}", machine) from e
    key = (path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, ca_path)
    with _cache_lock:
        found = _cache.get(key)
    if found is None:
        found = read_signature(path, ca_path)
        with _cache_lock:
            if len(_cache) > 64:
                _cache.clear()
            _cache[key] = found
    if not found.verified:
        raise BackendError("libvirt", f"root_image {path} refused: its CernVM signature is not "
                           f"verified ({found.error}); image_signing_dn requires it", machine)
    try:
        matched = re.search(pattern, found.dn or "")
    except re.error as e:
        raise BackendError("libvirt", f"image_signing_dn {pattern!r} is not a valid regular "
                           f"expression: {e}", machine) from e
    if not matched:
        raise BackendError("libvirt", f"root_image {path} refused: signed by {found.dn}, which "
                           f"does not match image_signing_dn {pattern!r}", machine)
    return found
