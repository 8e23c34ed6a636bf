# SPDX-License-Identifier: BSD-2-Clause
"""vac squid-conf and vac proxy-init as the original had them: squid-conf's acl and sibling
lines, rewritten only on change (mtime kept otherwise), wrong argument counts exit 2;
proxy-init prints a 12-hour RFC 3820 (or legacy) proxy signed by the given certificate."""
from __future__ import annotations

import datetime
import os
import subprocess
import sys

import pytest
from testbed import REPO

from vac import cli
from vac.ops import squidconf

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f2.example.com
state_dir = {state}
factories = f3.example.com f1.example.com f2.example.com gone.example.com
"""
ADDRESSES = {"f1.example.com": "10.0.0.1", "f2.example.com": "10.0.0.2",
             "f3.example.com": "10.0.0.3"}


def test_render_adds_acl_for_every_resolving_factory_and_siblings_for_the_others():
    text = squidconf.render("http_port 3128", ["f3.example.com", "f1.example.com",
                                               "f2.example.com", "gone.example.com"],
                            "f2.example.com", ADDRESSES.get)
    assert text == ("http_port 3128\n"
                    "acl localnet src 10.0.0.1/32\n"
                    "cache_peer 10.0.0.1 sibling 3128 3130 default\n"
                    "acl localnet src 10.0.0.2/32\n"
                    "acl localnet src 10.0.0.3/32\n"
                    "cache_peer 10.0.0.3 sibling 3128 3130 default\n")


def test_command_writes_only_when_the_content_changes(tmp_path, monkeypatch):
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=tmp_path / "state"))
    template = tmp_path / "squid.conf.vac"
    template.write_text(open(os.path.join(REPO, "etc", "squid.conf.vac")).read())
    out = tmp_path / "squid.conf"
    monkeypatch.setattr(squidconf, "resolve", ADDRESSES.get)
    argv = ["--config", str(conf), "squid-conf", str(template), str(out)]
    assert cli.main(argv) == 0
    first = out.read_text()
    assert first.startswith(template.read_text())
    assert first.endswith("cache_peer 10.0.0.3 sibling 3128 3130 default\n")
    os.utime(out, (1000, 1000))
    assert cli.main(argv) == 0
    assert out.stat().st_mtime == 1000, "unchanged content must not be rewritten"
    conf.write_text(CONF.format(state=tmp_path / "state").replace(" f3.example.com", ""))
    assert cli.main(argv) == 0
    assert out.stat().st_mtime != 1000 and "10.0.0.3" not in out.read_text()
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp")] == []


@pytest.mark.parametrize("args", [[], ["in"], ["in", "out", "extra"]])
def test_wrong_argument_counts_exit_2(args):
    done = subprocess.run([sys.executable, "-m", "vac.cli", "squid-conf", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=30)
    assert done.returncode == 2


def test_real_resolution_of_localhost():
    assert squidconf.resolve("localhost") == "127.0.0.1"
    assert squidconf.resolve("no-such-host.invalid") is None


@pytest.fixture
def signer(tmp_path):
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.DOMAIN_COMPONENT, "org"),
                      x509.NameAttribute(NameOID.COMMON_NAME, "vac operator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=10)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))
    return str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), cert


@pytest.mark.parametrize("legacy", [False, True])
def test_proxy_init_prints_a_12_hour_proxy(signer, capsys, legacy):
    from cryptography import x509

    cert_path, key_path, cert = signer
    argv = ["proxy-init", "-c", cert_path, "-k", key_path] + (["-l"] if legacy else [])
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.encode()
    certs = x509.load_pem_x509_certificates(out)
    proxy = certs[0]
    assert certs[-1] == cert and proxy.issuer == cert.subject
    assert b"PRIVATE KEY-----" in out
    life = proxy.not_valid_after_utc - proxy.not_valid_before_utc
    assert abs(life.total_seconds() - 12 * 3600) < 5
    last_cn = proxy.subject.rdns[-1].rfc4514_string()
    assert (last_cn == "CN=limited proxy") == legacy


def test_proxy_init_needs_cert_and_key(signer, capsys):
    with pytest.raises(SystemExit) as caught:
        cli.main(["proxy-init", "-c", signer[0]])
    assert caught.value.code == 2
    assert cli.main(["proxy-init", "-c", signer[0], "-k", signer[0]]) == 1
    assert "vac proxy-init:" in capsys.readouterr().err
