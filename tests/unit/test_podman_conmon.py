# SPDX-License-Identifier: BSD-2-Clause
"""conmon's cgroups under a Podman machine's parent (vac.backends.podman.conmon), on a fake
cgroup v2 tree: the cgroupfs manager's child `conmon` and the systemd manager's scope
libpod-conmon-<id>.scope are not charged to the machine, also once the scope has gone (its
CPU then stays in the parent's count), and a parent goes only after conmon has left."""
from __future__ import annotations

import pytest

from vac.backends.docker import cgroupparent
from vac.backends.docker.backend import DockerBackend
from vac.backends.podman import backend as pb
from vac.backends.podman import conmon
from vac.backends.podman.conmon import PodmanCgroups
from vac.host import cgroups

PARENT = "/vac/docker-1700000000_pod_factory1-03.example.com"
SLICE = cgroupparent.for_machine(
    type("D", (), {"path": "/m/1700000000_pod_factory1-03.example.com", "name": "x"})(),
    "systemd")
SLICE_PATH = cgroupparent.slice_path(SLICE)
ID = "0123abcd" * 8
CONTAINER = f"{SLICE_PATH}/libpod-{ID}.scope"
SCOPE = f"{SLICE_PATH}/libpod-conmon-{ID}.scope"


def tree(tmp_path, usage: dict, fs=None) -> PodmanCgroups:
    """A v2 tree with cpu.stat usage_usec at each path."""
    root = tmp_path / "cgroup"
    for path, usec in usage.items():
        set_usage(tmp_path, path, usec)
    return PodmanCgroups(hierarchies=cgroups.Hierarchies(v2=cgroups.Mount("/", str(root))),
                         fs=fs)


def set_usage(tmp_path, path: str, usec: int) -> None:
    d = tmp_path / "cgroup" / path.lstrip("/")
    d.mkdir(parents=True, exist_ok=True)
    (d / "cpu.stat").write_text(f"usage_usec {usec}\nuser_usec 1\nsystem_usec 2\n")


def set_populated(tmp_path, path: str, populated: bool) -> None:
    (tmp_path / "cgroup" / path.lstrip("/") / "cgroup.events").write_text(
        f"populated {int(populated)}\nfrozen 0\n")


def gone(tmp_path, path: str) -> None:
    d = tmp_path / "cgroup" / path.lstrip("/")
    for f in d.iterdir():
        f.unlink()
    d.rmdir()


# cgroupfs manager: the child `conmon` ----------------------------------------------------

def test_conmons_cpu_is_not_charged_to_the_machine(tmp_path):
    cg = tree(tmp_path, {PARENT: 5_000_000, f"{PARENT}/conmon": 250_000,
                         f"{PARENT}/libpod-abc": 4_750_000})
    assert cg.cpu_seconds(PARENT) == pytest.approx(4.75)
    assert cg.cpu_seconds(f"{PARENT}/conmon") == pytest.approx(0.25)
    plain = tree(tmp_path / "plain", {PARENT: 5_000_000})
    assert plain.cpu_seconds(PARENT) == pytest.approx(5.0)
    assert plain.cpu_seconds("/vac/docker-gone") is None


def test_a_parent_is_removed_with_conmons_cgroup(tmp_path):
    cg = tree(tmp_path, {PARENT: 1, f"{PARENT}/conmon": 1})
    root = tmp_path / "cgroup"
    for d in (root / PARENT.lstrip("/"), root / PARENT.lstrip("/") / "conmon"):
        (d / "cpu.stat").unlink()              # a cgroup directory has no removable files
    assert cg.remove(PARENT) == []
    assert not (root / PARENT.lstrip("/")).exists()


def test_a_busy_conmon_keeps_the_parent_and_says_which(tmp_path):
    cg = tree(tmp_path, {f"{PARENT}/conmon": 1})     # conmon's cpu.stat: rmdir fails
    left = cg.remove(PARENT)
    assert left == [str(tmp_path / "cgroup" / PARENT.lstrip("/") / "conmon")]
    assert (tmp_path / "cgroup" / PARENT.lstrip("/")).is_dir()


class Sleeps(cgroups.CgroupFS):
    """A CgroupFS whose sleeps are counted, running `then` at the third."""

    def __init__(self, then):
        self.slept, self.then = [], then

    def sleep(self, seconds):
        self.slept.append(seconds)
        if len(self.slept) == 3:
            self.then()


def test_removal_waits_for_conmon_to_leave_its_cgroup(tmp_path):
    root = tmp_path / "cgroup"
    child = root / PARENT.lstrip("/") / "conmon"
    child.mkdir(parents=True)
    procs = child / "cgroup.procs"
    procs.write_text("4242\n")
    fs = Sleeps(procs.unlink)                 # conmon leaves; the kernel empties the file
    cg = PodmanCgroups(hierarchies=cgroups.Hierarchies(v2=cgroups.Mount("/", str(root))), fs=fs)
    assert cg.remove(PARENT) == []
    assert len(fs.slept) == 3 and not (root / PARENT.lstrip("/")).exists()


# systemd manager: the scope libpod-conmon-<id>.scope ---------------------------------------

def test_only_podmans_conmon_scopes_are_conmons():
    assert conmon.is_monitor(f"libpod-conmon-{ID}.scope") and conmon.is_monitor("conmon")
    for other in (f"libpod-{ID}.scope", "libpod-conmon-.scope", f"libpod-conmon-{ID}",
                  "conmon.scope", f"crio-conmon-{ID}.scope"):
        assert not conmon.is_monitor(other), other


def test_a_conmon_scope_in_the_slice_is_not_charged_to_the_machine(tmp_path):
    assert SLICE_PATH.startswith("/vac.slice/vac-docker.slice/vac-docker-")
    cg = tree(tmp_path, {SLICE_PATH: 5_000_000, SCOPE: 300_000, CONTAINER: 4_700_000})
    set_populated(tmp_path, CONTAINER, True)
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7)
    assert cg.cpu_seconds(SCOPE) == pytest.approx(0.3)
    assert cg.cpu_seconds(CONTAINER) == pytest.approx(4.7)


def test_the_machine_read_after_its_end_stays_when_conmons_scope_goes(tmp_path):
    """The exit command's CPU after the container's end, and the scope's usage flushed into
    the slice when systemd removes it, are never charged: the reading after the end is
    remembered."""
    cg = tree(tmp_path, {SLICE_PATH: 5_000_000, SCOPE: 300_000, CONTAINER: 4_700_000})
    set_populated(tmp_path, CONTAINER, False)                # ended, its scope still there
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7)
    set_usage(tmp_path, SLICE_PATH, 5_400_000)               # `podman container cleanup`
    set_usage(tmp_path, SCOPE, 700_000)
    gone(tmp_path, CONTAINER)
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7)
    set_usage(tmp_path, SLICE_PATH, 5_450_000)               # its last 0.05 s, then it goes
    gone(tmp_path, SCOPE)
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7)
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7)


class ConmonRuns(cgroups.CgroupFS):
    """A CgroupFS on which conmon's exit command runs just before each of the first `times`
    reads of the slice's cpu.stat (after its scope's were read): 16 ms more in its scope and
    in the slice."""

    def __init__(self, tmp_path, times: int):
        self.tmp_path, self.times, self.usec = tmp_path, times, {SLICE_PATH: 5_000_000,
                                                                 SCOPE: 300_000}

    def read(self, path: str) -> str:
        if path.endswith(SLICE_PATH + "/cpu.stat") and self.times > 0:
            self.times -= 1
            for cgroup in (SLICE_PATH, SCOPE):
                self.usec[cgroup] += 16_000
                set_usage(self.tmp_path, cgroup, self.usec[cgroup])
        return super().read(path)


def test_conmon_running_between_the_reads_is_not_charged(tmp_path):
    """The CI guest's case: conmon's exit command ran between the reads of its scope and the
    slice, and the reading at collection came out 16 ms below the one at the end."""
    fs = ConmonRuns(tmp_path, times=1)
    cg = tree(tmp_path, {SLICE_PATH: 5_000_000, SCOPE: 300_000, CONTAINER: 4_700_000}, fs=fs)
    set_populated(tmp_path, CONTAINER, False)
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7, abs=1e-9)    # read again: exact
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7, abs=1e-9)


def test_a_conmon_busy_through_every_reading_is_never_charged_and_values_never_fall(tmp_path):
    fs = ConmonRuns(tmp_path, times=1000)
    cg = tree(tmp_path, {SLICE_PATH: 5_000_000, SCOPE: 300_000, CONTAINER: 4_700_000}, fs=fs)
    set_populated(tmp_path, CONTAINER, False)
    values = [cg.cpu_seconds(SLICE_PATH) for _ in range(4)]
    assert all(4.7 - 0.016 - 1e-9 <= v <= 4.7 + 1e-9 for v in values), values
    assert values == sorted(values), values
    gone(tmp_path, SCOPE)                  # its usage stays in the slice's count
    assert cg.cpu_seconds(SLICE_PATH) == values[-1]


def test_without_a_reading_after_the_end_conmons_last_usage_read_is_subtracted(tmp_path):
    cg = tree(tmp_path, {SLICE_PATH: 5_000_000, SCOPE: 300_000, CONTAINER: 4_700_000})
    set_populated(tmp_path, CONTAINER, True)                 # still running when read
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7)
    set_usage(tmp_path, SLICE_PATH, 6_800_000)     # 1.3 s more of the payload, 0.5 s of conmon
    gone(tmp_path, CONTAINER)
    gone(tmp_path, SCOPE)
    # approximate: conmon's 0.5 s after the last reading is charged
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(6.5)
    restarted = tree(tmp_path, {})
    assert restarted.cpu_seconds(SLICE_PATH) == pytest.approx(6.8)   # never saw the scope


def test_a_parent_gone_reads_none_and_is_forgotten(tmp_path):
    cg = tree(tmp_path, {SLICE_PATH: 5_000_000, SCOPE: 300_000})
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(4.7)
    gone(tmp_path, SCOPE)
    gone(tmp_path, SLICE_PATH)
    assert cg.cpu_seconds(SLICE_PATH) is None
    set_usage(tmp_path, SLICE_PATH, 1_000_000)               # a new parent of the same name
    assert cg.cpu_seconds(SLICE_PATH) == pytest.approx(1.0)


def test_removal_waits_for_systemd_to_remove_conmons_scope(tmp_path):
    fs = Sleeps(lambda: gone(tmp_path, SCOPE))              # conmon and its exit command left
    cg = tree(tmp_path, {SLICE_PATH: 1, SCOPE: 1}, fs=fs)
    (tmp_path / "cgroup" / SLICE_PATH.lstrip("/") / "cpu.stat").unlink()
    assert cg.remove(SLICE_PATH) == []
    assert len(fs.slept) == 3 and not (tmp_path / "cgroup" / SLICE_PATH.lstrip("/")).exists()


def test_conmon_is_waited_for_only_once_the_container_has_ended(tmp_path, monkeypatch):
    fs = Sleeps(lambda: gone(tmp_path, SCOPE))
    cg = tree(tmp_path, {SLICE_PATH: 1, SCOPE: 1, CONTAINER: 1}, fs=fs)
    set_populated(tmp_path, CONTAINER, True)
    cg.let_conmon_leave(SLICE_PATH)
    assert fs.slept == []                                   # running: conmon stays with it
    set_populated(tmp_path, CONTAINER, False)
    cg.let_conmon_leave(SLICE_PATH)
    assert len(fs.slept) == 3 and not (tmp_path / "cgroup" / SCOPE.lstrip("/")).exists()
    cg.let_conmon_leave(SLICE_PATH)
    assert len(fs.slept) == 3


def test_a_conmon_that_never_leaves_is_waited_for_a_bounded_time(tmp_path, monkeypatch):
    clock = iter(range(0, 1000, 3))
    monkeypatch.setattr(conmon.time, "monotonic", lambda: float(next(clock)))
    fs = Sleeps(lambda: None)
    cg = tree(tmp_path, {SLICE_PATH: 1, SCOPE: 1}, fs=fs)
    cg.let_conmon_leave(SLICE_PATH)
    assert 0 < len(fs.slept) <= conmon.EXIT_SECONDS / 3 + 1


class Record:
    """A machine directory's backend.json, as the backend reads it."""

    name = "m-03.example.com"

    def read_backend_record(self):
        return {"cgroup_parent": SLICE, "container_id": ID}


def test_the_backend_lets_conmon_leave_before_the_slice_is_stopped(make_config, monkeypatch):
    calls = []

    class Watched(PodmanCgroups):
        def let_conmon_leave(self, path):
            calls.append(("wait", path))

        def forget(self, path):
            calls.append(("forget", path))

    monkeypatch.setattr(DockerBackend, "destroy",
                        lambda self, name, directory: calls.append(("destroy", name)))
    conf = make_config("[settings]\nvac_space = s.example.com\n")
    pb.PodmanBackend(conf.settings, Watched()).destroy(Record.name, Record())
    assert calls == [("wait", SLICE_PATH), ("destroy", Record.name), ("forget", SLICE_PATH)]
