# SPDX-License-Identifier: BSD-2-Clause
"""The engines' own storage watched by admission by free disk space, on the real engines: the
Docker backend's data root, rootful Podman's storage and a rootless Podman's (the user's own,
in its home), as each engine's /info names them, are absolute existing directories; a cycle's
reading (vac.cycle.hostdisk through a real BackendPool) has a filesystem holding "docker data
root" / "podman storage" on their device;
`vac doctor`'s disk line watches that label from plan.json; and its <engine>-layer line says
whether the storage driver bounds the containers' writable layers, naming the driver."""
from __future__ import annotations

import os
import pwd

import pytest
from testbed import require_engine

from vac import planfile
from vac.backends.docker import checks as dockerchecks
from vac.config import load
from vac.cycle import diskgate, hostdisk
from vac.cycle.backendpool import BackendPool
from vac.host.facts import HostFacts
from vac.ops import diskcheck

ROOTLESS = "vacpodman"      # scripts/ci/setup-podman.sh makes the user and its service
HOST = HostFacts(fqdn="q8root.example.com", processors=2, vg_exists=lambda name: False)
CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = q8root.example.com
host_processors = 2
{url}

[machinetype m]
machine_model = {engine}
root_image = docker://vac-test/busybox:1
target_share = 1
"""
ENGINES = [pytest.param("docker", "docker_url = unix:///var/run/docker.sock", "data root",
                        id="docker", marks=pytest.mark.docker),
           pytest.param("podman", "podman_url = unix:///run/podman/podman.sock", "storage",
                        id="podman", marks=pytest.mark.podman),
           pytest.param("podman", f"podman_user = {ROOTLESS}", "storage",
                        id="podman-rootless", marks=pytest.mark.podman)]


@pytest.mark.parametrize("engine, url, what", ENGINES)
def test_the_engines_storage_is_watched_under_its_label(tmp_path, engine, url, what):
    home = None
    if ROOTLESS in url:
        try:
            home = pwd.getpwnam(ROOTLESS).pw_dir
        except KeyError:
            require_engine("rootless podman", False, f"no user {ROOTLESS}")
    conf = tmp_path / "vac.conf"
    conf.write_text(CONF.format(state=tmp_path / "state", url=url, engine=engine))
    config = load.build(load.read_raw([str(conf)]), HOST)
    config.settings.paths.ensure()
    pool = BackendPool(config.settings)
    pool.start_cycle()
    probe = pool.probe(engine)
    require_engine(engine, probe.available, probe.reason)
    root = pool.get(engine).data_root()
    assert root and os.path.isabs(root) and os.path.isdir(root), root
    assert home is None or root.startswith(home.rstrip("/") + "/"), (root, home)
    roots: dict = {}
    reading = hostdisk.read_host(config, pool, roots)
    label = f"{engine} {what}"
    [fs] = [f for f in reading.filesystems if label in f.names]
    assert roots == {engine: root}
    assert os.stat(fs.path).st_dev == os.stat(root).st_dev and fs.total > 0
    planfile.write(config.settings.paths.plan, planfile.PlanRecord(
        time=0.0, disk=diskgate.as_dict(config.settings, reading)))
    assert (label, fs.path) in diskcheck.recorded(config.settings)[0]
    [line] = diskcheck.host_disk(config.settings)
    assert label in line.detail, line
    layer = dockerchecks.writable_layer(config.settings, engine)
    assert layer.name == f"{engine}-layer" and "storage driver " in layer.detail, layer
    assert layer.status in ("ok", "warn"), layer
