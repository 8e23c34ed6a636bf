# SPDX-License-Identifier: BSD-2-Clause
"""Every `vac` command, as a real process whose reader goes away (`vac ... | head`): it ends
quietly with exit status 141 (128 + SIGPIPE), no traceback and no "Exception ignored" on
stderr; with Python's output buffered and unbuffered; the reader closing before anything is
written (every command) and after 10 bytes of an output larger than a pipe's buffer (the
commands that can print that much: config check, slots, doctor, the space commands, apel-sync,
each in text and JSON). Arguments that are wrong exit 2 everywhere, numbers included."""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys

import pytest
from testbed import REPO

from vac import cli

CLOSED_PIPE = 141
PIPE_BUFFER = 64 * 1024
MACHINETYPES = 1000
ADDRESSES = [f"127.0.{i // 250}.{i % 250 + 1}" for i in range(3000)]   # nothing answers
MONTHS = [f"{1900 + i // 12}{i % 12 + 1:02d}" for i in range(2000)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    top = tmp_path_factory.mktemp("closed-pipe")
    state = top / "state"
    state.mkdir()
    lines = ["[settings]", "vac_space = pipe.example.com", "factory_name = f1.example.com",
             f"state_dir = {state}", "vacquery_port = 19271", "vacquery_address = 127.0.0.1",
             "enable_fake_backend = true", "host_processors = 1000", ""]
    for i in range(MACHINETYPES):
        lines += [f"[machinetype mt{i:04d}]", "machine_model = fake", "target_share = 1",
                  "user_data = /etc/hostname", "user_data_file_a = /etc/hostname", ""]
    conf = top / "vac.conf"
    conf.write_text("\n".join(lines))
    (top / "image.iso").write_bytes(b"\0" * 70000)
    (top / "squid.in").write_text("http_port 3128\n")
    _signer(top)
    return top


def _signer(top) -> None:
    """A self-signed certificate and its key, for proxy-init."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vac operator")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=10)).sign(key, hashes.SHA256()))
    (top / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (top / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption()))


def commands(world) -> dict:
    """Every command and how to run it here; `True` where its output exceeds a pipe buffer."""
    t = ["-t", "0.3"]
    return {
        "config check": (["config", "check"], True),
        "config check --json": (["config", "check", "--json"], True),
        "config get": (["config", "get", "vac_space"], False),
        "slots": (["slots"], True),
        "slots --json": (["slots", "--json"], True),
        "doctor": (["doctor"], True),
        "doctor --json": (["doctor", "--json"], True),
        "machines": (["machines", *t, *ADDRESSES], True),
        "machines --json": (["machines", "--json", *t, "127.0.0.1"], False),
        "machinetype": (["machinetype", *t, "alpha", *ADDRESSES], True),
        "machinetype --json": (["machinetype", "--json", *t, "alpha", "127.0.0.1"], False),
        "factories": (["factories", *t, *ADDRESSES], True),
        "factories --json": (["factories", "--json", *t, "127.0.0.1"], False),
        "apel-sync": (["apel-sync", *MONTHS], True),
        "cernvm-signature": (["cernvm-signature", str(world / "image.iso")], False),
        "proxy-init": (["proxy-init", "-c", str(world / "cert.pem"), "-k",
                        str(world / "key.pem")], False),
        "squid-conf": (["squid-conf", str(world / "squid.in"), str(world / "squid.out")],
                       False),
        "--help": (["--help"], False),
        "doctor --help": (["doctor", "--help"], False),
        "--version": (["--version"], False),
    }


def subcommands() -> set:
    """Every command vac's parser knows (a command added later must be added above)."""
    found = set()

    def walk(parser, prefix):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    if not walk(sub, prefix + [name]):
                        found.add(" ".join(prefix + [name]))
                return True
        return False
    walk(cli.build_parser(), [])
    return found


def run(world, argv, read_first: int, unbuffered: bool):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = REPO
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen([sys.executable, "-m", "vac", "--config", str(world / "vac.conf"),
                             *argv], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if read_first:
        assert len(proc.stdout.read(read_first)) == read_first
    proc.stdout.close()
    err = proc.stderr.read().decode(errors="replace")
    return proc.wait(timeout=120), err


def test_every_command_is_covered(world):
    missing = subcommands() - {name.split(" --")[0] for name in commands(world)}
    assert not missing, f"commands without a closed-pipe case: {missing}"


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_a_reader_gone_before_the_output_ends_every_command_quietly(world, unbuffered):
    known = subcommands()
    for name, (argv, _) in commands(world).items():
        if argv[0] == "config" and " ".join(argv[:2]) not in known:
            continue            # a `vac config` subcommand this build does not have
        code, err = run(world, argv, 0, unbuffered)
        assert "Traceback" not in err and "Exception ignored" not in err, (name, err)
        if name == "squid-conf":            # writes its file, prints nothing
            assert code == 0, err
        elif name in ("--help", "--version") or name.endswith(" --help"):
            assert code in (0, CLOSED_PIPE), (name, err)   # argparse may drop it first
        else:
            assert code == CLOSED_PIPE, (name, code, err)


@pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])
def test_head_c_10_on_output_larger_than_a_pipe_buffer(world, unbuffered):
    for name, (argv, large) in commands(world).items():
        if not large:
            continue
        code, err = run(world, argv, 10, unbuffered)
        assert code == CLOSED_PIPE and err == "", (name, code, err)


def test_the_large_outputs_really_are_larger_than_a_pipe_buffer(world):
    env = dict(os.environ, PYTHONPATH=REPO)
    for name, (argv, large) in commands(world).items():
        if large:
            out = subprocess.run([sys.executable, "-m", "vac", "--config",
                                  str(world / "vac.conf"), *argv], cwd=REPO, env=env,
                                 capture_output=True, timeout=120).stdout
            assert len(out) > PIPE_BUFFER, (name, len(out))


@pytest.mark.parametrize("argv", [
    ["machinetype"], ["machines", "-t", "-5"], ["machines", "-t", "nan"],
    ["factories", "-t", "inf"], ["machinetype", "-t", "0", "alpha"], ["machines", "-t", "x"],
    ["apel-sync", "2026-1"], ["doctor", "--no-such-flag"], ["no-such-command"],
    ["proxy-init", "-c", "/etc/hostname"], ["squid-conf", "one"], ["cernvm-signature"]])
def test_wrong_arguments_exit_2(world, argv):
    env = dict(os.environ, PYTHONPATH=REPO)
    done = subprocess.run([sys.executable, "-m", "vac", "--config", str(world / "vac.conf"),
                           *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, (argv, done.stderr)
    assert "usage: vac" in done.stderr and "Traceback" not in done.stderr
