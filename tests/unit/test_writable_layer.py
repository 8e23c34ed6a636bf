# SPDX-License-Identifier: BSD-2-Clause
"""The containers' writable layers: bounded to the machine's scratch size with the engine's
size option where the storage driver takes one (devicemapper, zfs; overlay2, overlay and vfs
only on xfs mounted with project quotas; never a rootless Podman's), decided once per engine;
elsewhere `vac doctor` warns, naming the driver and why, that they are watched only through
the data root's free space."""
from __future__ import annotations

import pytest
from dockerspecs import CONF, make_spec

from vac.backends.docker import backend as dk
from vac.backends.docker import checks as dockerchecks
from vac.backends.docker import storage
from vac.backends.podman import backend as pb
from vac.ops.checks import OK, WARN

GB = 10 ** 9
MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 8:16 / /var/lib/docker rw,relatime shared:9 - xfs /dev/sdb rw,attr2,inode64,prjquota
31 22 8:17 / /srv/plain rw,relatime shared:10 - xfs /dev/sdc rw,attr2,inode64,noquota
32 22 8:18 / /srv/with\\040space rw,relatime,pquota shared:11 - xfs /dev/sdd rw
"""


def info(driver, backing="", root="/var/lib/docker"):
    return {"Driver": driver, "DockerRootDir": root,
            "DriverStatus": [["Backing Filesystem", backing], ["Supports d_type", "true"]]}


@pytest.mark.parametrize("answer, rootless, bounded, why", [
    (info("overlay2", "xfs"), False, True, "storage driver overlay2 on xfs with project quotas "
                                           "takes a size"),
    (info("overlay", "xfs", "/var/lib/docker/containers"), False, True, "storage driver "
     "overlay on xfs with project quotas takes a size"),
    (info("overlay2", "xfs", "/srv/plain/docker"), False, False, "storage driver overlay2 on "
     "xfs without project quotas takes no size (it needs xfs mounted with pquota)"),
    (info("overlay2", "xfs", "/srv/with space/d"), False, True, "storage driver overlay2 on "
     "xfs with project quotas takes a size"),
    (info("overlay2", "extfs", "/var/lib/other"), False, False, "storage driver overlay2 on "
     "extfs takes no size (it needs xfs mounted with pquota)"),
    (info("vfs"), False, False, "storage driver vfs on a file system it does not name takes "
                                "no size (it needs xfs mounted with pquota)"),
    (info("devicemapper"), False, True, "storage driver devicemapper takes a size"),
    (info("btrfs", "btrfs"), False, False, "storage driver btrfs takes no size here"),
    (info("overlay", "xfs"), True, False, "storage driver overlay of a rootless Podman: the "
                                          "user's storage has no project quotas"),
    ({}, False, False, "storage driver (not named) takes no size here"),
    ("hostile", False, False, "storage driver (not named) takes no size here")])
def test_which_drivers_take_a_size(answer, rootless, bounded, why):
    assert storage.layer(answer, MOUNTINFO, rootless) == storage.Layer(bounded, why)


def test_the_mount_holding_a_path_and_its_options():
    assert "prjquota" in storage.mount_options("/var/lib/docker/overlay2", MOUNTINFO)
    assert storage.mount_options("/var/lib/dockerish", MOUNTINFO) == {"rw", "relatime"}
    assert storage.mount_options("/x", "garbage\n\n1 2 3") == set()
    assert storage.backing_filesystem({"DriverStatus": [["Backing Filesystem", "xfs"]]}) == "xfs"
    assert storage.backing_filesystem({"DriverStatus": "x"}) == ""
    assert storage.size_option(None) == {}
    assert storage.size_option(4 * GB) == {"storage_opt": {"size": "4000000000"}}


class Api:
    def __init__(self, answer):
        self.answer, self.asked, self.closed = answer, 0, 0

    def info(self):
        self.asked += 1
        return self.answer

    def close(self):
        self.closed += 1


@pytest.fixture
def conf(make_config):
    return lambda extra="": make_config(CONF.format(extra=extra,
                                                    url="unix:///var/run/docker.sock"))


def test_a_new_container_gets_its_scratch_size_where_the_driver_takes_one(paths, conf,
                                                                          monkeypatch):
    monkeypatch.setattr(storage, "read_mountinfo", lambda: MOUNTINFO)
    config = conf("disk_gb_per_processor = 3")
    spec = make_spec(paths, config)
    backend = dk.DockerBackend(config.settings)
    backend._api = Api(info("overlay2", "xfs"))
    assert backend._layer_size(spec) == 3 * spec.processors * GB
    assert backend._layer_size(spec) == 3 * spec.processors * GB and backend._api.asked == 1
    plain = dk.DockerBackend(config.settings)
    plain._api = Api(info("overlay2", "extfs"))
    assert plain._layer_size(spec) is None
    unsized = dk.DockerBackend(conf().settings)
    unsized._api = Api(info("overlay2", "xfs"))
    assert unsized._layer_size(make_spec(paths, conf(), created=1700000001)) is None


def test_a_rootless_podmans_layers_are_never_sized(paths, conf, monkeypatch):
    monkeypatch.setattr(storage, "read_mountinfo", lambda: MOUNTINFO)
    config = conf("disk_gb_per_processor = 3")
    backend = pb.PodmanBackend(config.settings)
    backend.user = "vacpodman"
    backend._api = Api(info("overlay", "xfs"))
    monkeypatch.setattr(backend, "_client", lambda: backend._api)
    assert backend._layer_size(make_spec(paths, config)) is None
    assert not backend._layer.bounded and "rootless" in backend._layer.why


def test_doctor_warns_naming_the_driver_where_layers_are_not_bounded(conf, monkeypatch):
    monkeypatch.setattr(storage, "read_mountinfo", lambda: MOUNTINFO)
    settings = conf().settings
    engines = [Api(info("overlay2", "extfs", "/var/lib/other"))]
    monkeypatch.setattr(dockerchecks, "_client", lambda s, engine: engines[-1])
    line = dockerchecks.writable_layer(settings)
    assert line.name == "docker-layer" and line.status == WARN
    assert line.detail == ("containers' writable layers not bounded: storage driver overlay2 "
                           "on extfs takes no size (it needs xfs mounted with pquota); they "
                           "are watched only through the free space of the data root "
                           "/var/lib/other")
    assert "pquota" in line.fix and engines[-1].closed == 1
    engines.append(Api(info("overlay2", "xfs")))
    line = dockerchecks.writable_layer(settings, "podman")
    assert line.name == "podman-layer" and line.status == OK and "project quotas" in line.detail

    def down(s, engine):
        raise OSError(111, "Connection refused")
    monkeypatch.setattr(dockerchecks, "_client", down)
    assert dockerchecks.writable_layer(settings).status == WARN
