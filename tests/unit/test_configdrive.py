# SPDX-License-Identifier: BSD-2-Clause
"""Config drives: an ISO 9660 image labelled config-2 that cloud-init and the test guest read."""
from __future__ import annotations

import io
import json
import os
import stat

import pycdlib
import pytest

from vac.backends.libvirt import configdrive
from vac.machine.directory import MachineDir


def _read_iso(path):
    iso = pycdlib.PyCdlib()
    iso.open(path)
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        files = {}
        for top, _dirs, names in iso.walk(rr_path="/"):
            for name in names:
                rr = f"{top.rstrip('/')}/{name}"
                out = io.BytesIO()
                iso.get_file_from_iso_fp(out, rr_path=rr)
                files[rr.lstrip("/")] = out.getvalue()
        return label, files
    finally:
        iso.close()


@pytest.fixture
def machine(paths):
    d = MachineDir.create(paths, 1700000000, "atlas", "f1-02.example.com")
    d.write("jobfeatures/job_id", "0e8b2cb5-1f5c-4d47-9f8e-6f0d6c3a1b02")
    d.write("jobfeatures/allocated_CPU", "2\n")
    d.write("machinefeatures/total_cpu", "8")
    d.write("user_data", "#!/bin/sh\necho 'héllo'\n")
    d.write("root_public_key", "ssh-ed25519 AAAAC3 root@f1\n")
    return d


def test_config_drive_holds_user_data_meta_data_and_mjf(machine, tmp_path):
    out = str(tmp_path / "cd.iso")
    assert configdrive.build_config_drive(machine, "f1.example.com", out) == out
    label, files = _read_iso(out)
    assert label == "config-2"
    assert files["openstack/latest/user_data"] == "#!/bin/sh\necho 'héllo'\n".encode()
    meta = json.loads(files["openstack/latest/meta_data.json"])
    assert meta["uuid"] == "0e8b2cb5-1f5c-4d47-9f8e-6f0d6c3a1b02"
    assert meta["hostname"] == meta["name"] == "f1-02.example.com"
    assert meta["availability_zone"] == "f1.example.com"
    assert meta["public_keys"] == {"0": "ssh-ed25519 AAAAC3 root@f1\n"}
    assert meta["meta"]["machinetype"] == "atlas"
    assert files["openstack/latest/machinefeatures/total_cpu"] == b"8"
    assert files["openstack/latest/jobfeatures/allocated_CPU"] == b"2\n"
    assert files["openstack/latest/jobfeatures/job_id"].startswith(b"0e8b2cb5")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600


def test_no_user_data_means_no_user_data_file(machine, tmp_path):
    machine.remove("user_data")
    out = str(tmp_path / "cd.iso")
    configdrive.build_config_drive(machine, "f1.example.com", out)
    _, files = _read_iso(out)
    assert "openstack/latest/user_data" not in files
    assert "openstack/latest/meta_data.json" in files


def test_symlinked_mjf_keys_and_user_data_are_not_copied(machine, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("host secret")
    os.symlink(str(secret), machine.file("machinefeatures/leak"))
    machine.remove("user_data")
    os.symlink(str(secret), machine.file("user_data"))
    out = str(tmp_path / "cd.iso")
    configdrive.build_config_drive(machine, "f1.example.com", out)
    _, files = _read_iso(out)
    assert b"host secret" not in b"".join(files.values())
    assert "openstack/latest/machinefeatures/leak" not in files


def test_rewrite_replaces_atomically(machine, tmp_path):
    out = str(tmp_path / "cd.iso")
    configdrive.build_config_drive(machine, "f1.example.com", out)
    machine.write("user_data", "#!/bin/sh\necho second\n")
    configdrive.build_config_drive(machine, "f1.example.com", out)
    _, files = _read_iso(out)
    assert files["openstack/latest/user_data"] == b"#!/bin/sh\necho second\n"
    assert [n for n in os.listdir(str(tmp_path)) if n.startswith(".tmp-")] == []
