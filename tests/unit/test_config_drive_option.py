# SPDX-License-Identifier: BSD-2-Clause
"""config_drive: whether a VM machinetype's machines get the OpenStack config drive (label
config-2). With it, cloud-init's ds-identify chooses the ConfigDrive datasource and never asks
the metadata service; off, an image reads everything over HTTP (EC2 or OpenStack)."""
from __future__ import annotations

import types

import pytest

from vac.backends.base import MachineSpec
from vac.backends.libvirt import backend as lb
from vac.backends.libvirt import configdrive
from vac.errors import ConfigError
from vac.machine.directory import MachineDir
from vac.machine.slots import Slot, machine_name

SETTINGS = "[settings]\nvac_space = vac01.example.com\nfactory_name = f1.example.com\n"
VM = "[machinetype vm]\nmachine_model = vm-raw\nkernel = /k\ntarget_share = 1\n"


def test_on_by_default_and_off_with_no(make_config):
    assert make_config(SETTINGS + VM).machinetypes["vm"].config_drive is True
    conf = make_config(SETTINGS + VM + "config_drive = no\n")
    assert conf.machinetypes["vm"].config_drive is False


def test_a_value_that_is_not_a_boolean_is_refused_naming_the_line(make_config):
    with pytest.raises(ConfigError, match=r"vac.conf:\d+ \[machinetype vm\] config_drive: "
                                          r"'maybe' is not a boolean"):
        make_config(SETTINGS + VM + "config_drive = maybe\n")


def _create(make_config, paths, monkeypatch, option: str):
    """The disks of the domain the libvirt backend asks libvirt to start (no libvirtd)."""
    config = make_config(SETTINGS + VM + option)
    name = machine_name("f1.example.com", 0)
    directory = MachineDir.create(paths, 1000, "vm", name)
    spec = MachineSpec(name=name, machinetype=config.machinetypes["vm"],
                       settings=config.settings, slot=Slot(0, name), processors=1,
                       memory_mb=256, created=1000, shutdown_time=2000, uuid="u-1",
                       directory=directory)
    seen = []
    monkeypatch.setattr(lb.LibvirtBackend, "_conn",
                        lambda self: types.SimpleNamespace(createXML=lambda xml, flags: None))
    monkeypatch.setattr(lb.LibvirtBackend, "virt_type", "qemu")
    monkeypatch.setattr(lb.LibvirtBackend, "_disks", lambda self, s: ([], [], False))
    monkeypatch.setattr(lb.LibvirtBackend, "_params",
                        lambda self, s, virt, disks: seen.append(list(disks)))
    monkeypatch.setattr(lb.LibvirtBackend, "_call",
                        lambda self, what, fn, *a, machine=None: fn(*a))
    monkeypatch.setattr(lb, "render_domain_xml", lambda params: "<domain/>")
    built = []
    monkeypatch.setattr(configdrive, "build_config_drive",
                        lambda d, f, path: built.append(path) or path)
    assert lb.LibvirtBackend(config.settings).create(spec) == "u-1"
    return seen[0], built, directory


@pytest.mark.parametrize("option, drives", [("", 1), ("config_drive = yes\n", 1),
                                            ("config_drive = no\n", 0)])
def test_the_drive_is_built_and_attached_only_when_on(make_config, paths, monkeypatch,
                                                     option, drives):
    disks, built, directory = _create(make_config, paths, monkeypatch, option)
    assert len(built) == drives
    assert [d.source for d in disks if d.readonly] == built
    if drives:
        assert built == [directory.file(lb.CONFIG_DRIVE)]
