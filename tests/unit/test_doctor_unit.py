# SPDX-License-Identifier: BSD-2-Clause
"""vac doctor's pieces without engines: directory traversal by another user (owner, group and
other bits), the QEMU user from qemu.conf, ports in use, subordinate ids, the exit status and
--json of a rejected configuration, and a check that crashes not hiding the others."""
from __future__ import annotations

import json
import os
import pathlib
import pwd
import shutil
import socket
import tempfile

import pytest

from vac import backends, cli
from vac.backends.apptainer import checks as apptainerchecks
from vac.backends.checks import BackendChecks
from vac.backends.libvirt import checks as libvirtchecks
from vac.host import access
from vac.ops import checks, doctor

NOBODY = pwd.getpwnam("nobody")


@pytest.fixture
def open_top():
    """A directory whose ancestors all have o+x (pytest's tmp_path is below a 0700 one)."""
    path = tempfile.mkdtemp(prefix="vac-doctor-unit-", dir="/var/tmp")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_first_barrier_follows_owner_group_and_other_bits(open_top):
    b = os.path.join(open_top, "b")
    path = os.path.join(b, "c")
    os.makedirs(path)
    os.chmod(b, 0o750)
    uid, gid = 4242, 4343
    assert access.first_barrier(path, uid, [gid]) == (b, 0o750, os.getuid())
    os.chown(b, -1, gid)
    assert access.first_barrier(path, uid, [gid]) is None, "group x lets the group in"
    os.chmod(b, 0o700)
    assert access.first_barrier(path, uid, [gid]) == (b, 0o700, os.getuid())
    os.chown(b, uid, -1)
    assert access.first_barrier(path, uid, [gid]) is None, "the owner's x lets the owner in"
    assert access.first_barrier(path, 0, []) is None, "root enters everywhere"


def test_pytest_tmp_path_is_itself_behind_a_barrier_for_others(tmp_path):
    # Why the test above does not use tmp_path: /tmp/pytest-of-root is 0700.
    found = access.first_barrier(str(tmp_path), NOBODY.pw_uid, [NOBODY.pw_gid])
    assert found is not None and found[1] & 0o001 == 0


def test_qemu_user_comes_from_qemu_conf(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text('#user = "root"\nuser = "nobody"\ngroup = "nogroup"\n')
    assert access.qemu_user(str(conf)).pw_name == "nobody"
    conf.write_text('user = "+0"\n')
    assert access.qemu_user(str(conf)).pw_uid == 0
    conf.write_text('user = "vac-no-such-user"\n')
    assert access.qemu_user(str(conf)) is None


def test_explain_names_the_directory_and_the_fix(open_top):
    tmp_path = pathlib.Path(open_top)
    conf = tmp_path / "qemu.conf"
    conf.write_text('user = "nobody"\n')
    locked = os.path.join(tmp_path, "locked")
    os.makedirs(os.path.join(locked, "vac"))
    os.chmod(locked, 0o700)
    why = access.explain_qemu_denied([os.path.join(locked, "vac", "disk")], str(conf))
    assert why.startswith(f"the QEMU user nobody cannot enter {locked} (mode 0700")
    assert why.endswith("(or a state_dir whose parents all have o+x)")


def test_port_in_use_by_another_program_fails_and_by_vacd_passes():
    held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    held.bind(("127.0.0.1", 19258))
    try:
        line = checks.port("vacquery-port", socket.SOCK_DGRAM, "127.0.0.1", 19258, None)
        assert line.status == checks.FAIL and "in use by another program" in line.detail
        line = checks.port("vacquery-port", socket.SOCK_DGRAM, "127.0.0.1", 19258, 1234)
        assert line.status == checks.OK and "vacd (pid 1234)" in line.detail
    finally:
        held.close()
    assert checks.port("p", socket.SOCK_DGRAM, "127.0.0.1", 19258, None).status == checks.OK


def test_subordinate_ids_are_counted_by_name_or_uid(tmp_path):
    sub = tmp_path / "subuid"
    sub.write_text("other:100000:65536\nvacsngly:200000:1000\n995:300000:24\nbroken\n")
    assert apptainerchecks.sub_ids(str(sub), "vacsngly", 995) == 1024
    assert apptainerchecks.sub_ids(str(sub), "nobody", 65534) == 0


def test_clock_before_2025_fails():
    assert checks.clock(now=0.0)[0].status == checks.FAIL


def test_line_format():
    line = checks.Check("kvm", checks.WARN, "/dev/kvm missing", "load kvm_intel")
    assert line.line() == "warn kvm: /dev/kvm missing; fix: load kvm_intel"


def test_rejected_configuration_is_a_failed_check_with_exit_1(tmp_path, capsys):
    conf = tmp_path / "vac.conf"
    conf.write_text("[settings]\nfactory_name = f1.example.com\n")
    assert cli.main(["--config", str(conf), "doctor", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["checks"][0]["name"] == "config"
    assert "vac_space" in report["checks"][0]["detail"]


def test_a_crashing_check_is_a_line_and_the_others_still_run(tmp_path, monkeypatch, make_config):
    config = make_config("""
        [settings]
        vac_space = vac01.example.com
        vacquery_port = 19259
        vacquery_address = 127.0.0.1
        """)

    def boom(*a, **k):
        raise RuntimeError("broken")

    monkeypatch.setattr(checks, "clock", boom)
    lines = {c.name: c for c in doctor.run_checks(config)}
    assert lines["clock"].status == checks.FAIL and "RuntimeError: broken" in lines["clock"].detail
    assert lines["vacquery-port"].status == checks.OK


def test_kvm_missing_is_a_warning_with_the_emulation_fallback(tmp_path):
    line = libvirtchecks.kvm(str(tmp_path / "no-kvm"))[0]
    assert line.status == checks.WARN
    assert "QEMU's emulation (TCG)" in line.detail and "nested virtualisation" in line.fix


def test_kvm_missing_fails_when_kvm_is_required(tmp_path, make_config, monkeypatch):
    config = make_config("""
        [settings]
        vac_space = vac01.example.com
        libvirt_virt_type = kvm
        vacquery_port = 19255
        vacquery_address = 127.0.0.1
        """)
    lines = libvirtchecks.required_kvm(config.settings, str(tmp_path / "no-kvm"))
    assert lines[0].status == checks.FAIL
    assert "libvirt_virt_type = kvm" in lines[0].detail


def test_metrics_port_is_checked_when_set(make_config):
    config = make_config("""
        [settings]
        vac_space = vac01.example.com
        vacquery_port = 19256
        vacquery_address = 127.0.0.1
        metrics_port = 19257
        metrics_address = 127.0.0.1
        """)
    lines = {c.name: c for c in doctor.run_checks(config)}
    assert lines["metrics-port"].detail == "tcp 127.0.0.1:19257 free"




def test_every_backend_has_its_checks_found_by_the_registry():
    """The registry finds each backend wing's checks by name (the fake has none to add)."""
    found = {n: backends.backend_checks(n, None) for n in backends.BACKENDS}
    assert {n: type(c).__name__ for n, c in found.items()} == {
        "apptainer": "ApptainerChecks", "docker": "DockerChecks", "fake": "BackendChecks",
        "libvirt": "LibvirtChecks", "podman": "PodmanChecks"}
    assert all(isinstance(c, BackendChecks) for c in found.values())
    assert [c.HOST_CGROUPS for _, c in sorted(found.items())] == [True, True, False, False, True]
    assert found["libvirt"].listeners() == [("metadata-port", "169.254.169.253", 80),
                                            ("metadata-port", "169.254.169.254", 80)]
