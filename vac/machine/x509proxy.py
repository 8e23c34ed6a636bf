# SPDX-License-Identifier: BSD-2-Clause
"""X.509 limited proxies for ##user_data_option_x509_proxy## (and `vac proxy-init`).

make_proxy() signs a new limited proxy with a machinetype's x509cert.pem / x509key.pem, as the
original's makeX509Proxy did: RFC 3820 (proxyCertInfo with the Globus limited-proxy policy
language) with CN = the machinetype name, or a Globus legacy proxy with CN = "limited proxy".
The proxy expires at the machine's shutdown time; a signer that expires earlier is refused.

Deviation from the original: the proxy key is 2048-bit RSA, not 1024-bit. OpenSSL 3 at its
default security level (as on EL9 and in current CernVM/Alma guests) rejects 1024-bit RSA keys,
so a 1024-bit proxy would be unusable in today's machines.

Needs the `cryptography` package (EL9: python3-cryptography); it is imported only when a proxy
is made, so hosts that never use user_data_proxy do not need it.
"""
from __future__ import annotations

import datetime
import re
import time
from typing import List, Optional

from vac.errors import UserDataError

PROXY_KEY_BITS = 2048
PROXY_CERT_INFO_OID = "1.3.6.1.5.5.7.1.14"        # id-pe-proxyCertInfo, RFC 3820
LIMITED_PROXY_POLICY_OID = "1.3.6.1.4.1.3536.1.1.1.9"  # Globus "limited proxy" language
LEGACY_CN = "limited proxy"
PEM_LIMIT = 256 * 1024
_PEM_CERT_RE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def make_proxy(cert_path: str, key_path: str, expires: int, *, cn: Optional[str] = None,
               legacy: bool = False, now: Optional[float] = None,
               key_bits: int = PROXY_KEY_BITS) -> str:
    """A PEM limited proxy: proxy certificate + unencrypted proxy key + the signer's chain.

    Args:
        cert_path: PEM file whose first certificate signs the proxy (the rest is the chain).
        key_path: the signer's unencrypted PEM private key.
        expires: Unix time at which the proxy expires (the machine's shutdown time).
        cn: the extra CN of an RFC 3820 proxy (the machinetype name); None gives the
            serial-like timestamp the original used for `vac proxy-init`.
        legacy: a Globus legacy proxy (CN "limited proxy", no proxyCertInfo) instead.
        now: the clock (start of validity and serial number).

    Raises:
        UserDataError: a file is unreadable or invalid, the key does not match the certificate,
            the signer expires before `expires`, or `cryptography` is not installed.
    """
    c = _crypto()
    now = time.time() if now is None else now
    signer_key = _load_key(c, key_path)
    chain = _load_chain(c, cert_path)
    signer = chain[0]
    _check_signer(c, signer, signer_key, cert_path, key_path, expires)
    serial = int(now * 100)
    extra_cn = LEGACY_CN if legacy else (cn or str(serial))
    proxy_key = c.rsa.generate_private_key(public_exponent=65537, key_size=key_bits)
    builder = (c.x509.CertificateBuilder()
               .subject_name(_proxy_subject(c, signer.subject, extra_cn))
               .issuer_name(signer.subject)
               .public_key(proxy_key.public_key())
               .serial_number(serial)
               .not_valid_before(_utc(now))
               .not_valid_after(_utc(expires))
               .add_extension(c.x509.KeyUsage(
                   digital_signature=True, content_commitment=False, key_encipherment=True,
                   data_encipherment=False, key_agreement=True, key_cert_sign=False,
                   crl_sign=False, encipher_only=False, decipher_only=False), critical=True))
    if not legacy:
        builder = builder.add_extension(c.x509.UnrecognizedExtension(
            c.x509.ObjectIdentifier(PROXY_CERT_INFO_OID), proxy_cert_info_der()), critical=True)
    try:
        proxy = builder.sign(signer_key, c.hashes.SHA256())
    except (ValueError, TypeError) as e:
        raise UserDataError(f"cannot sign a proxy with {key_path}: {e}") from e
    pem = c.serialization.Encoding.PEM
    parts = [proxy.public_bytes(pem),
             proxy_key.private_bytes(pem, c.serialization.PrivateFormat.PKCS8,
                                     c.serialization.NoEncryption())]
    parts.extend(cert.public_bytes(pem) for cert in chain)
    return b"".join(parts).decode("ascii")


def proxy_cert_info_der() -> bytes:
    """DER of ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage OID } }:
    no path length constraint, the limited-proxy policy language, no policy."""
    return _der(0x30, _der(0x30, _der(0x06, _oid_body(LIMITED_PROXY_POLICY_OID))))


def _der(tag: int, body: bytes) -> bytes:
    n = len(body)
    if n < 0x80:
        length = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + length + body


def _oid_body(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray([40 * arcs[0] + arcs[1]])
    for arc in arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


class _Crypto:
    """The parts of `cryptography` we use, imported on first use."""

    def __init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import NameOID

        self.x509, self.hashes, self.serialization = x509, hashes, serialization
        self.rsa, self.ec, self.NameOID = rsa, ec, NameOID


def _crypto() -> _Crypto:
    try:
        return _Crypto()
    except ImportError as e:
        raise UserDataError("making X.509 proxies needs the Python cryptography package "
                            "(EL9: dnf install python3-cryptography)") from e


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(PEM_LIMIT + 1)
    except OSError as e:
        raise UserDataError(f"cannot read {what} {path}: {e.strerror or e}") from e
    if len(data) > PEM_LIMIT:
        raise UserDataError(f"{what} {path} is larger than {PEM_LIMIT} bytes")
    return data


def _load_key(c: _Crypto, path: str):
    data = _read(path, "proxy signing key")
    try:
        key = c.serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise UserDataError(f"{path}: not an unencrypted PEM private key ({e})") from e
    if not isinstance(key, (c.rsa.RSAPrivateKey, c.ec.EllipticCurvePrivateKey)):
        raise UserDataError(f"{path}: only RSA and EC keys can sign proxies")
    return key


def _load_chain(c: _Crypto, path: str) -> List:
    data = _read(path, "proxy signing certificate")
    chain = []
    for block in _PEM_CERT_RE.findall(data):
        try:
            chain.append(c.x509.load_pem_x509_certificate(block))
        except ValueError as e:
            raise UserDataError(f"{path}: invalid certificate ({e})") from e
    if not chain:
        raise UserDataError(f"{path}: no PEM certificate found")
    return chain


def _check_signer(c: _Crypto, signer, key, cert_path: str, key_path: str,
                  expires: int) -> None:
    spki = c.serialization.PublicFormat.SubjectPublicKeyInfo
    der = c.serialization.Encoding.DER
    if signer.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise UserDataError(f"{key_path} is not the key of the certificate in {cert_path}")
    not_after = _not_after(signer)
    if not_after < int(expires):
        raise UserDataError(f"certificate {cert_path} expires at {not_after}, before the "
                            f"requested proxy expiry {int(expires)}")


def _not_after(cert) -> int:
    when = getattr(cert, "not_valid_after_utc", None)
    if when is None:  # cryptography < 42: a naive datetime in UTC
        when = cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
    return int(when.timestamp())


def _proxy_subject(c: _Crypto, issuer_subject, extra_cn: str):
    """The signer's subject (kept exactly, RDN by RDN) plus one more CN RDN."""
    cn = c.x509.RelativeDistinguishedName([c.x509.NameAttribute(c.NameOID.COMMON_NAME,
                                                                extra_cn)])
    return c.x509.Name(list(issuer_subject.rdns) + [cn])


def _utc(t: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(int(t), tz=datetime.timezone.utc)
