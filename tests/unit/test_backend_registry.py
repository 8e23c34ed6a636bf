# SPDX-License-Identifier: BSD-2-Clause
"""The backend registry: models resolve in one place; missing libraries give a clear reason."""
from __future__ import annotations

import sys

import pytest

from vac import backends
from vac.cycle.backendpool import BackendPool
from vac.errors import BackendUnavailable


def test_models_resolve_to_backends():
    assert {m: backends.backend_for_model(m) for m in ("cernvm3", "vm-raw", "docker",
                                                       "singularity", "apptainer")} == {
        "cernvm3": "libvirt", "vm-raw": "libvirt", "docker": "docker",
        "singularity": "apptainer", "apptainer": "apptainer"}
    with pytest.raises(BackendUnavailable):
        backends.backend_for_model("xen")


def test_importing_vac_needs_no_backend_library():
    import subprocess

    code = ("import sys; sys.modules['libvirt'] = None; sys.modules['docker'] = None; "
            "import vac.cycle.factory, vac.cli, vac.daemon, vac.backends.docker.backend, "
            "vac.backends.libvirt.backend; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_missing_library_says_what_to_install(make_config, monkeypatch):
    conf = make_config("[settings]\nvac_space = s.example.com\n[machinetype vm]\n"
                       "machine_model = vm-raw\n")
    monkeypatch.setitem(sys.modules, "libvirt", None)
    monkeypatch.setattr(backends, "_loaded", {})
    pool = BackendPool(conf.settings)
    probe = pool.available_for_model("vm-raw")
    assert not probe.available
    assert "install libvirt-python" in probe.reason
