# SPDX-License-Identifier: BSD-2-Clause
"""vac.optional: each configured feature names the library it needs and the package to install;
an absent module (made absent here through sys.modules) is reported once per feature. (vacd
run where a module really is absent: tests/integration/test_vacd_optional.py.)"""
from __future__ import annotations

import sys

import pytest

from vac import optional
from vac.backends import BACKENDS, MODEL_BACKENDS
from vac.config.options import MODELS

SETTINGS = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
singularity_user = vacsngly
"""


def absent(monkeypatch, *modules):
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def test_the_text_names_setting_module_and_both_packages():
    m = optional.MissingLibrary.of("metrics_port", "prometheus_client")
    assert m.text() == ("metrics_port is set but the Python module prometheus_client is not "
                        "installed: install python3-prometheus_client (EL9) or pip install "
                        "prometheus-client")
    assert "pip install spython" in optional.MissingLibrary.of("x", "spython").text()


def test_nothing_missing_when_everything_is_installed(make_config):
    """A real check: this test machine has every optional library (CI installs them)."""
    conf = make_config(SETTINGS + "metrics_port = 9100\nstatus_port = 9101\n"
                       "[machinetype d]\nmachine_model = docker\nroot_image = docker://x\n"
                       "[machinetype v]\nmachine_model = vm-raw\n"
                       "[machinetype a]\nmachine_model = apptainer\n")
    assert optional.missing_libraries(conf) == []
    assert {module for _, module in optional.wanted(conf)} == {
        "prometheus_client", "jinja2", "docker", "libvirt", "pycdlib", "spython"}


def test_a_real_absent_module_is_not_installed():
    assert optional.import_error("vac_no_such_module_x") is not None
    assert optional.installed("json")


def test_metrics_port_without_prometheus_client(make_config, monkeypatch):
    conf = make_config(SETTINGS + "metrics_port = 9100\n")
    absent(monkeypatch, "prometheus_client")
    missing = optional.missing_libraries(conf)
    assert [(m.setting, m.module) for m in missing] == [("metrics_port", "prometheus_client")]
    assert "python3-prometheus_client" in missing[0].text()


def test_unset_metrics_port_needs_nothing(make_config, monkeypatch):
    absent(monkeypatch, "prometheus_client", "docker", "libvirt", "pycdlib", "spython")
    assert optional.missing_libraries(make_config(SETTINGS)) == []


def test_one_entry_per_backend_library_naming_the_machinetypes(make_config, monkeypatch):
    conf = make_config(SETTINGS + "[machinetype b]\nmachine_model = docker\n"
                       "root_image = docker://x\n[machinetype a]\nmachine_model = docker\n"
                       "root_image = docker://y\n[machinetype v]\nmachine_model = vm-raw\n")
    absent(monkeypatch, "docker", "pycdlib")
    texts = [m.text() for m in optional.missing_libraries(conf)]
    assert texts == [
        "machine_model = docker (machinetypes a, b) is set but the Python module docker is not "
        "installed: install python3-docker (EL9) or pip install docker",
        "machine_model = vm-raw (machinetype v) is set but the Python module pycdlib is not "
        "installed: install python3-pycdlib (EL9) or pip install pycdlib"]


def test_proxies_signatures_and_apel_queue(make_config, monkeypatch):
    conf = make_config(SETTINGS + "gocdb_sitename = SITE\nhs06_per_processor = 10\n"
                       "[machinetype c]\nmachine_model = cernvm3\nuser_data_proxy = true\n"
                       "image_signing_dn = /CN=x\n")
    absent(monkeypatch, "cryptography", "dirq")
    settings = [m.setting for m in optional.missing_libraries(conf)]
    assert settings == ["gocdb_sitename", "user_data_proxy (machinetype c)",
                        "image_signing_dn (machinetype c)"]


def test_require_raises_an_import_error_carrying_the_text(monkeypatch):
    absent(monkeypatch, "docker")
    with pytest.raises(ImportError) as e:
        optional.require("machine_model = docker", "docker")
    assert str(e.value).startswith("machine_model = docker is set but the Python module docker")
    assert e.value.missing.module == "docker"


def test_every_model_and_backend_has_its_libraries_listed():
    assert set(MODELS) <= set(MODEL_BACKENDS)
    assert set(BACKENDS) == set(optional.BACKEND_MODULES)
    for modules in optional.BACKEND_MODULES.values():
        assert set(modules) <= set(optional.LIBRARIES)


# The backends' lazy imports say the same --------------------------------------------------


def test_libvirt_probe_names_the_missing_config_drive_library(monkeypatch):
    from types import SimpleNamespace

    from vac.backends.libvirt.backend import LibvirtBackend

    absent(monkeypatch, "pycdlib")
    probe = LibvirtBackend(SimpleNamespace(libvirt_uri="qemu:///nowhere")).probe()
    assert not probe.available
    assert probe.reason == ("machine_model = cernvm3/cernvm4/vm-raw is set but the Python "
                            "module pycdlib is not installed: install python3-pycdlib (EL9) "
                            "or pip install pycdlib")


def test_a_config_drive_without_pycdlib_is_a_clear_state_error(monkeypatch, tmp_path):
    from vac.backends.libvirt.configdrive import write_iso
    from vac.errors import StateError

    absent(monkeypatch, "pycdlib")
    with pytest.raises(StateError) as e:
        write_iso({"a": b"x"}, str(tmp_path / "drive.iso"))
    assert "Python module pycdlib is not installed: install python3-pycdlib" in str(e.value)


def test_image_signing_dn_without_cryptography_refuses_naming_the_setting(monkeypatch, tmp_path):
    from vac.backends.libvirt import signature
    from vac.errors import BackendError

    image = tmp_path / "image.iso"
    image.write_bytes(b"\0" * 4096)
    absent(monkeypatch, "cryptography")
    with pytest.raises(BackendError) as e:
        signature.enforce(str(image), "/CN=x", "m1")
    assert str(e.value) == ("libvirt m1: image_signing_dn is set but the Python module "
                            "cryptography is not installed: install python3-cryptography (EL9) "
                            "or pip install cryptography")


def test_apptainer_bind_arguments_without_spython(monkeypatch):
    from vac.backends.apptainer.launch import spython_bind_args
    from vac.errors import BackendUnavailable

    absent(monkeypatch, "spython", "spython.main", "spython.main.base",
           "spython.main.base.command")
    with pytest.raises(BackendUnavailable) as e:
        spython_bind_args(["/a:/b:ro"])
    assert "machine_model = apptainer/singularity is set but the Python module spython" \
        in str(e.value)
