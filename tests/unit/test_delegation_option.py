# SPDX-License-Identifier: BSD-2-Clause
"""The per-machinetype option cgroup_delegate: parsed (default true), listed by `vac config
check`, reported as accepted but not supported on a cgroup v1 host and for VMs, and honoured
by the backends (off: the machine's cgroup is not delegated), over fake cgroup trees."""
from __future__ import annotations

import os
import textwrap

import pytest
from apptainerfakes import USER
from cgroupfakes import FakeKernel, v1_tree, v2_tree

from vac import cli
from vac.backends.apptainer.backend import ApptainerBackend
from vac.backends.base import MachineSpec
from vac.backends.docker import delegation as docker_delegation
from vac.config import unsupported
from vac.configcommand import machinetype_rows
from vac.host import cgroups
from vac.machine.directory import MachineDir
from vac.machine.slots import Slot

CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
singularity_user = vacsngly

[machinetype dock]
machine_model = docker
root_image = docker://busybox
{dock}

[machinetype app]
machine_model = apptainer
root_image = /images/app.sif
{app}

[machinetype vm]
machine_model = vm-raw
root_image = /images/vm.img
{vm}
"""
NOTE = "accepted but not supported"


def config(make_config, dock="", app="", vm=""):
    return make_config(CONF.format(dock=dock, app=app, vm=vm))


def notes(cfg, version):
    return [p.located() for p in unsupported.findings(cfg, cgroup_version=version)
            if p.option == "cgroup_delegate"]


def test_the_option_defaults_to_true_and_is_listed_with_its_origin(make_config):
    cfg = config(make_config, dock="cgroup_delegate = no")
    assert cfg.machinetypes["dock"].cgroup_delegate is False
    assert cfg.machinetypes["app"].cgroup_delegate is True
    rows = {row[0]: row for row in machinetype_rows(cfg, cfg.machinetypes["dock"])}
    assert rows["cgroup_delegate"][1] is False and rows["cgroup_delegate"][3] == 11
    rows = {row[0]: row for row in machinetype_rows(cfg, cfg.machinetypes["app"])}
    assert rows["cgroup_delegate"][1:3] == (True, "default")


def test_a_bad_value_is_refused_naming_the_option(make_config):
    from vac.errors import ConfigError
    with pytest.raises(ConfigError, match="cgroup_delegate"):
        config(make_config, app="cgroup_delegate = maybe")


def test_v1_host_reports_the_option_as_not_supported_where_set(make_config):
    cfg = config(make_config, dock="cgroup_delegate = true", app="cgroup_delegate = false")
    found = notes(cfg, 1)
    assert len(found) == 2
    assert "[machinetype app] cgroup_delegate: cgroup_delegate = false: " + NOTE in found[0]
    assert "[machinetype dock] cgroup_delegate: cgroup_delegate = true: " + NOTE in found[1]
    assert all("cgroup v1" in f and "cannot be delegated" in f for f in found)
    assert notes(cfg, 2) == []
    assert notes(config(make_config), 1) == []        # not set: nothing to report


def test_a_vm_machinetype_accepts_the_option_with_a_note_on_any_host(make_config):
    cfg = config(make_config, vm="cgroup_delegate = true")
    for version in (1, 2):
        found = notes(cfg, version)
        assert len(found) == 1 and "[machinetype vm]" in found[0] and NOTE in found[0]
        assert "the guest has its own kernel" in found[0]
        assert "machine_model is vm-raw" in found[0]


def test_config_check_on_this_host_says_what_its_cgroups_allow(tmp_path, capsys):
    """On a v1 host (the CI host) the option is noted as not supported; on v2 it is not."""
    conf = tmp_path / "vac.conf"
    conf.write_text(textwrap.dedent(f"""
        [settings]
        vac_space = vac01.example.com
        factory_name = f1.example.com
        state_dir = {tmp_path}/state

        [machinetype dock]
        machine_model = docker
        target_share = 1
        root_image = docker://busybox
        cgroup_delegate = true
        """))
    status = cli.main(["--config", str(conf), "config", "check"])
    out = capsys.readouterr().out
    assert status == 0, out
    said = [line for line in out.splitlines() if "cgroup_delegate = true: " + NOTE in line]
    v1 = cgroups.read_hierarchy().version == 1
    assert said == ([f"warning: {conf}:11 [machinetype dock] cgroup_delegate: "
                     "cgroup_delegate = true: " + NOTE + ": this host has cgroup v1 (or "
                     "hybrid) hierarchies, whose cgroups cannot be delegated safely: machines "
                     "get a cgroup they cannot write, as before"] if v1 else []), out
    listed = [line.split() for line in out.splitlines() if "cgroup_delegate  " in line]
    assert listed == [["cgroup_delegate", "=", "yes", "#", f"{conf}:11", "[machinetype",
                       "dock]"]]


# The backends ---------------------------------------------------------------------------

class OwnedKernel(FakeKernel):
    """FakeKernel that records chown calls."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.owners = {}

    def chown(self, path, uid, gid):
        self.owners[path] = (uid, gid)


def apptainer_spec(cfg, paths):
    mt = cfg.machinetypes["app"]
    name = "f1-01.example.com"
    directory = MachineDir.create(paths, 1700000000, "app", name)
    return MachineSpec(name=name, machinetype=mt, settings=cfg.settings, slot=Slot(1, name),
                       processors=1, memory_mb=32, created=1700000000,
                       shutdown_time=1700003600, uuid="1234-abcd", directory=directory)


def new_apptainer_cgroup(tmp_path, cfg, paths, version):
    h, kernel = (v2_tree if version == 2 else v1_tree)(tmp_path)
    owned = OwnedKernel(version)
    owned.roots = kernel.roots
    backend = ApptainerBackend(cfg.settings, proc_root=str(tmp_path), hierarchy=h,
                               cgroup_fs=owned)
    return backend._new_cgroup(apptainer_spec(cfg, paths), USER), owned


@pytest.mark.parametrize("option, delegated", [("", True), ("cgroup_delegate = true", True),
                                               ("cgroup_delegate = false", False)])
def test_apptainer_delegates_on_v2_only_when_the_option_is_on(tmp_path, make_config, paths,
                                                               option, delegated):
    cfg = config(make_config, app=option)
    cg, kernel = new_apptainer_cgroup(tmp_path, cfg, paths, 2)
    leaf = os.path.join(cg.dir(""), "leaf")
    assert os.path.isdir(leaf) is delegated
    assert bool(kernel.owners) is delegated
    assert cg.procs_files == [os.path.join(leaf if delegated else cg.dir(""), "cgroup.procs")]
    assert cg.memory_limit() == 32 << 20                # the slot's limit either way


def test_apptainer_on_v1_delegates_nothing_whatever_the_option(tmp_path, make_config, paths):
    cfg = config(make_config, app="cgroup_delegate = true")
    cg, kernel = new_apptainer_cgroup(tmp_path, cfg, paths, 1)
    assert kernel.owners == {} and cg.leaf is None
    assert cg.procs_files == [os.path.join(d, "cgroup.procs") for d in cg.dirs]
    assert not any(os.path.isdir(os.path.join(d, "leaf")) for d in cg.dirs)
    assert cg.memory_limit() == 32 << 20


class NoEngine:
    """An engine client that must not be asked anything."""

    def inspect_container(self, container_id):
        raise AssertionError("the engine was asked about the container")


def test_docker_delegation_is_not_attempted_when_the_option_is_off(tmp_path):
    unified = cgroups.Hierarchies(v2=cgroups.Mount("/", cgroups.UNIFIED_POINT))
    host = cgroups.Cgroups(proc_root=str(tmp_path), hierarchies=unified)
    assert docker_delegation.delegate(NoEngine(), "c0ffee", "m1", host, wanted=False) is False
    v1 = cgroups.Hierarchies(v1={"memory": cgroups.Mount("/", "/sys/fs/cgroup/memory")})
    host = cgroups.Cgroups(proc_root=str(tmp_path), hierarchies=v1)
    assert docker_delegation.delegate(NoEngine(), "c0ffee", "m1", host, wanted=True) is False
