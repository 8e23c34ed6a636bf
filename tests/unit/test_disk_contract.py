# SPDX-License-Identifier: BSD-2-Clause
"""The disk in the backend contract: each backend's data root (Backend.data_root: None by
default; Docker's DockerRootDir and Podman's storage from the engine's /info, asked once) and
its running machines' growing disk files (Backend.disk_growth: libvirt's VM disk files, sparse
or qcow2, held by QEMU under the state directory's tmp/); admission by free disk space asking
every available backend of the pool, with no backend named in vac.cycle, counting each disk
file's room on the filesystem it is in; `vac doctor` watching every place the last cycle did."""
from __future__ import annotations

import os
import struct

import pytest

from vac import planfile
from vac.backends.base import ROOT_DISK, SCRATCH_DISK, DiskGrowth, Probe
from vac.backends.docker import backend as dk
from vac.backends.docker import storage
from vac.backends.fake import FakeBackend
from vac.backends.libvirt import diskgrowth
from vac.backends.podman import backend as pb
from vac.cycle import diskgate, hostdisk
from vac.errors import BackendError
from vac.host import diskspace
from vac.host.diskspace import DiskReading, Filesystem
from vac.machine.directory import MachineDir, SlotRecord, write_slot_record
from vac.ops import diskcheck

GB = 10 ** 9
NOW = 1_700_000_000.0
CONF = """
[settings]
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 4
disk_floor_gb = 5
disk_floor_fraction = 0.05

[machinetype a]
machine_model = fake
target_share = 1
"""


@pytest.fixture
def settings(make_config):
    return make_config(CONF).settings


class Api:
    """The few calls of the docker SDK's APIClient that /info needs, counted."""

    def __init__(self, info):
        self.answer, self.asked = info, 0

    def info(self):
        self.asked += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def engine(cls, settings, info):
    backend = cls(settings)
    backend._api = Api(info)
    return backend


# The contract's defaults and the engines' answers --------------------------------------------

def test_a_backend_keeps_nothing_that_grows_unless_it_says(settings):
    fake = FakeBackend(settings)
    assert fake.data_root() is None and fake.disk_growth() == []
    assert DiskGrowth("m", "/d", 10, 4).room == 6 and DiskGrowth("m", "/d", 10, 12).room == 0


@pytest.mark.parametrize("answer, root", [
    ({"DockerRootDir": "/var/lib/docker"}, "/var/lib/docker"),
    ({"DockerRootDir": "relative/dir"}, None), ({"DockerRootDir": 3}, None), ({}, None),
    ({"DockerRootDir": "/x\0y"}, None), ("not a mapping", None)])
def test_the_data_root_is_an_absolute_path_the_engine_names(answer, root):
    assert storage.data_root(answer) == root


def test_docker_says_its_data_root_and_asks_info_once(settings):
    backend = engine(dk.DockerBackend, settings,
                     {"DockerRootDir": "/data/docker", "CgroupDriver": "systemd"})
    assert backend.data_root() == "/data/docker"
    assert backend._cgroup_driver() == "systemd" and backend.data_root() == "/data/docker"
    assert backend._api.asked == 1
    assert dk.DockerBackend.DATA_ROOT_NAME == "data root"


def test_podman_says_its_storage_and_its_errors_are_podmans(settings):
    backend = engine(pb.PodmanBackend, settings,
                     {"DockerRootDir": "/var/lib/containers/storage"})
    assert backend.data_root() == "/var/lib/containers/storage"
    assert f"{backend.NAME} {backend.DATA_ROOT_NAME}" == "podman storage"
    broken = engine(pb.PodmanBackend, settings, OSError(111, "Connection refused"))
    with pytest.raises(BackendError) as caught:
        broken.data_root()
    assert caught.value.backend == "podman"


# Admission asks every available backend --------------------------------------------------------

class Rooted(FakeBackend):
    """A fake backend that names a data root (or fails to, `root` an exception)."""

    def __init__(self, settings, name, root, growth=()):
        super().__init__(settings)
        self.NAME, self.root, self.growth, self.asked = name, root, list(growth), 0

    def data_root(self):
        self.asked += 1
        if isinstance(self.root, Exception):
            raise self.root
        return self.root

    def disk_growth(self):
        return self.growth


class Pool:
    def __init__(self, backends, available):
        self.backends, self.available = backends, available

    def probed(self):
        return {name: Probe(name in self.available, reason="" if name in self.available
                            else "down") for name in self.backends}

    def get(self, name):
        return self.backends[name]


def test_the_data_roots_of_the_available_backends_are_asked_until_they_answer(settings):
    docker = Rooted(settings, "docker", "/var/lib/docker")
    podman = Rooted(settings, "podman", BackendError("podman", "not reachable"))
    quiet = Rooted(settings, "apptainer", None)
    down = Rooted(settings, "libvirt", "/never")
    pool = Pool({"docker": docker, "podman": podman, "apptainer": quiet, "libvirt": down},
                {"docker", "podman", "apptainer"})
    roots = {}
    backends = hostdisk.available(pool)
    assert [b.NAME for b in backends] == ["apptainer", "docker", "podman"]
    assert hostdisk.data_roots(backends, roots) == [("docker data root", "/var/lib/docker")]
    podman.root = "/srv/containers"
    assert hostdisk.data_roots(backends, roots) == [("docker data root", "/var/lib/docker"),
                                                    ("podman data root", "/srv/containers")]
    assert (docker.asked, podman.asked, quiet.asked, down.asked) == (1, 2, 1, 0)
    assert hostdisk.available(None) == []


def test_the_disk_files_are_watched_where_they_are(settings, tmp_path):
    tmp = str(tmp_path)
    vm = Rooted(settings, "libvirt", None, [DiskGrowth("vm1", tmp, 40 * GB, 1 * GB),
                                            DiskGrowth("vm1", tmp, 10 * GB, 10 * GB)])
    places, growing = hostdisk.disk_files(hostdisk.growth_files([vm]))
    assert places == [("libvirt disk files", tmp)]
    assert growing == [(tmp, 39 * GB), (tmp, 0)]


def test_a_vms_scratch_disk_file_is_its_scratch_bytes(make_config, tmp_path):
    """The allocated bytes of a VM's scratch-kind disk files, by its machine directory's name
    (its slot record's): what its heartbeat says, in plan.json too; its root disk is none of
    it, and the room is counted once, with the disk files' growth."""
    config = make_config(CONF)
    paths, tmp = config.settings.paths, str(tmp_path)
    vm = MachineDir.create(paths, int(NOW), "a", "f1-00.example.com")
    write_slot_record(paths, "f1-00.example.com", SlotRecord(int(NOW), "a", "vm-raw"))
    libvirt = Rooted(config.settings, "libvirt", None, [
        DiskGrowth("f1-00.example.com", tmp, 4 * GB, 3 * GB, SCRATCH_DISK),
        DiskGrowth("f1-00.example.com", tmp, 20 * GB, 2 * GB, ROOT_DISK),
        DiskGrowth("f1-01.example.com", tmp, 4 * GB, 1 * GB, SCRATCH_DISK)])   # no slot record
    disk = hostdisk.HostDisk()
    reading = disk.inputs(config, Pool({"libvirt": libvirt}, {"libvirt"}))["disk"]
    name = os.path.basename(vm.path)
    assert disk.scratch_bytes(name) == 3 * GB
    assert disk.scratch_bytes("1700000000_a_f1-01.example.com") is None
    assert diskgate.as_dict(config.settings, reading)["scratch_used_bytes"] == {name: 3 * GB}
    assert reading.scratch_growth() == 0
    assert sum(f.growth for f in reading.filesystems) == 1 * GB + 18 * GB + 3 * GB


def test_without_a_scratch_disk_file_a_vm_has_no_scratch_bytes(make_config, tmp_path):
    config = make_config(CONF)
    paths = config.settings.paths
    vm = MachineDir.create(paths, int(NOW), "a", "f1-00.example.com")
    write_slot_record(paths, "f1-00.example.com", SlotRecord(int(NOW), "a", "vm-raw"))
    growth = [DiskGrowth("f1-00.example.com", str(tmp_path), 20 * GB, 2 * GB, ROOT_DISK),
              DiskGrowth("f1-00.example.com", str(tmp_path), 20 * GB, 2 * GB)]
    assert hostdisk.disk_scratches(paths, growth) == {}
    disk = hostdisk.HostDisk()
    disk.inputs(config, Pool({"libvirt": Rooted(config.settings, "libvirt", None, growth)},
                             {"libvirt"}))
    assert disk.scratch_bytes(os.path.basename(vm.path)) is None


def test_the_vms_disk_files_count_on_their_own_filesystem(tmp_path, settings):
    state, pool, elsewhere = (str(tmp_path / n) for n in ("vac", "vac/scratch", "vmdisks"))
    for d in (pool, elsewhere):
        os.makedirs(d)
    devices = {state: 1, pool: 1, elsewhere: 2}

    class Vfs:
        f_frsize = 1

        def __init__(self, free):
            self.f_blocks, self.f_bfree, self.f_bavail = 100 * GB, free, free

    def stat(path):
        if path not in devices:
            raise FileNotFoundError(2, "No such file or directory")
        return os.stat_result((0, 0, devices[path], 0, 0, 0, 0, 0, 0, 0))

    sizes = {state: Vfs(50 * GB), pool: Vfs(50 * GB), elsewhere: Vfs(20 * GB)}
    got = diskspace.read(state, pool, [], [("libvirt disk files", elsewhere)],
                         growing=[(elsewhere, 9 * GB), (elsewhere, 4 * GB), ("/gone", GB)],
                         statvfs=sizes.__getitem__, stat=stat)
    assert [(f.names, f.growth, f.scratch) for f in got.filesystems] == [
        (("state directory", "scratch pool"), 0, True), (("libvirt disk files",), 13 * GB, False)]
    assert got.growth() == 13 * GB
    # 20 GB free: a 5 GB floor and 13 GB to grow, room left; with 16 GB to grow, none.
    assert diskgate.Budget(settings, got).stop() is None
    more = DiskReading((got.filesystems[0], Filesystem(
        ("libvirt disk files",), elsewhere, 20 * GB, 100 * GB, growth=16 * GB)))
    why = diskgate.Budget(settings, more).stop()
    assert why.resource == elsewhere and why.text == (
        f"disk: libvirt disk files {elsewhere} has 20.0 GB free < 5.0 GB floor "
        "(disk_floor_gb 5, disk_floor_fraction 0.05 of 100.0 GB) + 16.0 GB the machines' "
        "scratch and disk files may grow into / disk_overcommit 1")
    assert diskgate.as_dict(settings, more)["filesystems"][1]["growth_bytes"] == 16 * GB
    assert diskgate.as_dict(settings, more)["scratch_growth_bytes"] == 16 * GB


def test_doctor_watches_every_place_the_last_cycle_did(settings, tmp_path):
    reading = DiskReading((
        Filesystem(("state directory", "scratch pool", "libvirt disk files"), "/var/lib/vac",
                   30 * GB, 100 * GB, scratch=True, growth=7 * GB),
        Filesystem(("docker data root", "podman storage"), "/data", 8 * GB, 40 * GB)))
    planfile.write(settings.paths.plan, planfile.PlanRecord(
        time=NOW, disk=diskgate.as_dict(settings, reading)))
    assert diskcheck.recorded(settings) == (
        [("libvirt disk files", "/var/lib/vac"), ("docker data root", "/data"),
         ("podman storage", "/data")], [("/var/lib/vac", 7 * GB)])


def test_doctor_reads_the_places_of_every_label(settings, monkeypatch):
    seen = []
    monkeypatch.setattr(diskcheck, "recorded", lambda s: (
        [("podman storage", "/srv/storage")], [("/var/lib/vac/tmp", 2 * GB)]))

    def read(state, pool, mounts, places, made, growing, thin=None):
        seen.append((places, growing, thin))
        return DiskReading((Filesystem(("podman storage",), "/srv/storage", 30 * GB,
                                       100 * GB, growth=2 * GB),))
    monkeypatch.setattr(diskcheck.diskspace, "read", read)
    [line] = diskcheck.host_disk(settings)
    assert seen == [([("podman storage", "/srv/storage")], [("/var/lib/vac/tmp", 2 * GB)],
                     None)]      # the loop mechanism (or none) here: no thin pool
    assert line.detail.startswith("podman storage /srv/storage: 30.0 GB free of 100.0 GB")
    assert line.detail.endswith("the machines' scratch and disk files may still grow 2.0 GB")


# libvirt: the disk files QEMU holds ---------------------------------------------------------

def qcow2(path, virtual):
    with open(path, "wb") as f:
        f.write(b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", virtual)
                + bytes(4096))


def test_the_vms_disk_files_held_under_tmp_with_their_room(tmp_path):
    tmp = tmp_path / "state" / "tmp"
    tmp.mkdir(parents=True)
    raw = tmp / "root.disk.abc"
    with open(raw, "wb") as f:
        f.write(b"x" * 8192)
        f.truncate(40 * GB)
    qcow2(tmp / "root.disk.q", 20 * GB)
    other = tmp_path / "elsewhere.iso"
    other.write_bytes(b"y" * 100)
    pids, proc = tmp_path / "run", tmp_path / "proc"
    pids.mkdir()
    (pids / "f1-00.example.com.pid").write_text("4242\n")
    (pids / "f1-01.example.com.pid").write_text("not a pid")
    (pids / "gone.example.com.pid").write_text("999")
    fds = proc / "4242" / "fd"
    fds.mkdir(parents=True)
    for fd, target in (("3", raw), ("4", raw), ("5", tmp / "root.disk.q"), ("6", other),
                       ("7", tmp / "vanished"), ("x", raw)):
        os.symlink(str(target), str(fds / fd))
    got = diskgrowth.growth(str(tmp), str(pids), str(proc))
    assert [(g.machine, g.directory, g.size, g.kind) for g in got] == [
        ("f1-00.example.com", str(tmp), 40 * GB, ROOT_DISK),
        ("f1-00.example.com", str(tmp), 20 * GB, ROOT_DISK)]
    assert 8192 <= got[0].allocated < 1 * GB and got[0].room == 40 * GB - got[0].allocated
    assert diskgrowth.growth(str(tmp), str(tmp_path / "none"), str(proc)) == []


def test_a_deleted_files_link_still_names_its_directory(tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    held = tmp / "scratch.disk.z"
    held.write_bytes(b"z" * 10)
    fds = tmp_path / "fd"
    fds.mkdir()
    os.symlink(str(held), str(fds / "9"))
    monkeypatch.setattr(diskgrowth.os, "readlink", lambda p: f"{held} (deleted)")
    [got] = diskgrowth.held("vm", str(fds), str(tmp))
    assert got.size == 10 and diskgrowth.qcow2_size(str(held)) is None
    assert got.kind == SCRATCH_DISK


def test_files_this_process_holds_unlinked_are_read_through_proc(tmp_path):
    """The real /proc: a sparse file and a qcow2 file, opened then unlinked as QEMU's are,
    found through this process's fds with their room."""
    if not os.path.isdir(f"/proc/{os.getpid()}/fd"):
        pytest.skip("no /proc here")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    raw, overlay = tmp / "scratch.disk.1", tmp / "root.disk.2"
    qcow2(overlay, 20 * GB)
    held = [open(overlay, "rb"), open(raw, "wb")]
    try:
        held[1].write(b"x" * 4096)
        held[1].truncate(5 * GB)
        held[1].flush()
        os.unlink(raw)
        os.unlink(overlay)
        pids = tmp_path / "run"
        pids.mkdir()
        (pids / "f1-02.example.com.pid").write_text(str(os.getpid()))
        got = sorted(diskgrowth.growth(str(tmp), str(pids)), key=lambda g: g.size)
        assert [(g.machine, g.size, g.kind) for g in got] == [
            ("f1-02.example.com", 5 * GB, SCRATCH_DISK), ("f1-02.example.com", 20 * GB, ROOT_DISK)]
        assert all(0 < g.allocated < GB for g in got)
    finally:
        for f in held:
            f.close()


@pytest.mark.parametrize("path,kind", [("/v/tmp/root.disk.x1", ROOT_DISK),
                                       ("/v/tmp/scratch.disk.y2", SCRATCH_DISK),
                                       ("/v/tmp/config.iso", ""), ("/v/scratch.disk/z", "")])
def test_which_disk_a_file_is_comes_from_its_name(path, kind):
    assert diskgrowth.kind_of(path) == kind
