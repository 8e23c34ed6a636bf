# SPDX-License-Identifier: BSD-2-Clause
"""A Docker machine's cgroup parent in the form of the engine's driver: a /vac path with
cgroupfs, an escaped slice with systemd; its cgroup path, CPU seconds and removal."""
from __future__ import annotations

import os

import pytest

from vac.backends.docker import cgroupparent as cp
from vac.errors import ProcessError
from vac.host import cgroups
from vac.machine.directory import MachineDir

DIR_NAME = "1700000000_dock_factory1-03.example.com"
SLICE = "vac-docker-1700000000_dock_factory1\\x2d03.example.com.slice"


@pytest.fixture
def directory(tmp_path) -> MachineDir:
    path = tmp_path / "machines" / DIR_NAME
    path.mkdir(parents=True)
    return MachineDir(str(path))


def test_the_form_follows_the_engines_cgroup_driver(directory):
    assert cp.for_machine(directory, "cgroupfs") == f"/vac/docker-{DIR_NAME}"
    assert cp.for_machine(directory, "systemd") == SLICE
    assert cp.for_machine(directory, "") is None
    assert cp.for_machine(directory, "something-new") is None


def test_escape_is_systemd_escapes():
    # systemd-escape 'a-b c/d:é' -> a\x2db\x20c\x2fd\x3a\xc3\xa9 (':' escaped too: runc
    # splits its systemd cgroupsPath on it); a leading dot is escaped, later ones are not.
    assert cp.escape("a-b c/d:é") == "a\\x2db\\x20c\\x2fd\\x3a\\xc3\\xa9"
    assert cp.escape(".x.y_Z9") == "\\x2ex.y_Z9"
    assert "-" not in cp.escape(DIR_NAME)


def test_a_slice_name_nests_at_each_dash():
    assert cp.slice_path("vac.slice") == "/vac.slice"
    assert cp.slice_path(SLICE) == ("/vac.slice/vac-docker.slice/" + SLICE)
    for bad in ("vac--x.slice", "-vac.slice", "vac.scope", "a/b.slice", ".slice"):
        assert cp.slice_path(bad) is None, bad


def test_only_our_parents_are_ours():
    assert cp.is_ours(f"/vac/docker-{DIR_NAME}") and cp.is_ours(SLICE)
    for other in ("", "/docker", "/vac", "system.slice", "vac-docker-.slice",
                  "vac-docker-x.slice/y", "/vac/apptainer-x"):
        assert not cp.is_ours(other), other
    assert cp.cgroup_path(SLICE) == "/vac.slice/vac-docker.slice/" + SLICE
    assert cp.cgroup_path(f"/vac/docker-{DIR_NAME}") == f"/vac/docker-{DIR_NAME}"
    assert cp.cgroup_path("/kubepods") is None


def v2_tree(tmp_path, path: str, usage_usec: int) -> cgroups.Cgroups:
    root = tmp_path / "cgroup"
    d = root / path.lstrip("/")
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text(f"usage_usec {usage_usec}\nuser_usec 1\nsystem_usec 2\n")
    h = cgroups.Hierarchies(v2=cgroups.Mount("/", str(root)))
    return cgroups.Cgroups(hierarchies=h)


def test_cpu_seconds_are_read_at_the_slices_path(tmp_path):
    cg = v2_tree(tmp_path, cp.slice_path(SLICE), 3_250_000)
    assert cp.cpu_seconds(SLICE, cg) == pytest.approx(3.25)
    assert cp.exists(SLICE, cg)
    assert cp.cpu_seconds("vac-docker-other.slice", cg) is None
    assert cp.cpu_seconds("system.slice", cg) is None


def test_a_slice_is_stopped_through_systemd_not_removed_by_hand(tmp_path, monkeypatch):
    cg = v2_tree(tmp_path, cp.slice_path(SLICE), 1)
    ran = []
    monkeypatch.setattr(cp.subp, "run", lambda argv, timeout: ran.append(list(argv)))
    cp.remove(SLICE, cg)
    assert ran == [["systemctl", "stop", SLICE]]
    assert os.path.isdir(str(tmp_path / "cgroup" / cp.slice_path(SLICE).lstrip("/")))
    ran.clear()
    for not_ours in (None, "", "system.slice", "/docker/x"):
        cp.remove(not_ours, cg)
    cp.remove("vac-docker-gone.slice", cg)     # no cgroup: nothing to stop
    assert ran == []


def test_a_failing_systemctl_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    cg = v2_tree(tmp_path, cp.slice_path(SLICE), 1)

    def fail(argv, timeout):
        raise ProcessError(list(argv), 5, "", "Unit not loaded")

    monkeypatch.setattr(cp.subp, "run", fail)
    cp.remove(SLICE, cg)
    assert "cannot stop slice" in caplog.text


def test_a_cgroupfs_parent_is_removed_in_every_hierarchy(tmp_path):
    root = tmp_path / "cgroup"
    (root / "vac" / f"docker-{DIR_NAME}").mkdir(parents=True)
    cg = cgroups.Cgroups(hierarchies=cgroups.Hierarchies(v2=cgroups.Mount("/", str(root))))
    cp.remove(f"/vac/docker-{DIR_NAME}", cg)
    assert not (root / "vac" / f"docker-{DIR_NAME}").exists()


def test_oom_kills_are_read_under_the_parent_v2(tmp_path):
    cg = v2_tree(tmp_path, cp.slice_path(SLICE), 1)
    events = tmp_path / "cgroup" / cp.slice_path(SLICE).lstrip("/") / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert cp.oom_kills(SLICE, cg) == 1
    assert cp.oom_kills("vac-docker-gone.slice", cg) == 0
    assert cp.oom_kills("system.slice", cg) == 0


def test_oom_kills_on_v1_read_the_memory_hierarchy(tmp_path):
    memory = tmp_path / "memory"
    d = memory / "vac" / f"docker-{DIR_NAME}"
    d.mkdir(parents=True)
    (d / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    h = cgroups.Hierarchies(v1={"memory": cgroups.Mount("/", str(memory))})
    assert cp.oom_kills(f"/vac/docker-{DIR_NAME}", cgroups.Cgroups(hierarchies=h)) == 2


CONTROLLERS = ("cpu", "cpuacct", "memory", "blkio", "pids", "devices")
FACTORY = "factory1.example.com"


def v1_host(tmp_path, dir_names) -> cgroups.Cgroups:
    """A legacy host: one hierarchy per controller, each with /vac/docker-<dir> for every name
    (the cgroupfs driver makes the parent in every one)."""
    v1 = {}
    for controller in CONTROLLERS:
        point = tmp_path / "cgroup" / controller
        for name in dir_names:
            (point / "vac" / f"docker-{name}").mkdir(parents=True)
        v1[controller] = cgroups.Mount("/", str(point))
    return cgroups.Cgroups(hierarchies=cgroups.Hierarchies(v1=v1))


def parent_dirs(tmp_path, name: str):
    return [c for c in CONTROLLERS
            if (tmp_path / "cgroup" / c / "vac" / f"docker-{name}").exists()]


def test_a_finished_machine_without_backend_json_loses_its_parent_in_every_controller(
        tmp_path):
    # vacd was killed after the engine made the parent and before backend.json named it.
    machines = tmp_path / "machines"
    (machines / DIR_NAME).mkdir(parents=True)
    (machines / DIR_NAME / "finished").write_text("")
    cg = v1_host(tmp_path, [DIR_NAME])
    assert cp.present(cg) == {DIR_NAME}
    assert cp.release_leftovers(str(machines), FACTORY, cg) == [DIR_NAME]
    assert parent_dirs(tmp_path, DIR_NAME) == []
    assert cp.release_leftovers(str(machines), FACTORY, cg) == []


def test_vanished_machines_are_released_living_and_other_factories_ones_are_not(tmp_path):
    living = "1700000100_dock_factory1-04.example.com"
    vanished = "1700000050_dock_factory1-05.example.com"      # its directory expired
    other = "1700000000_dock_factory2-03.example.com"         # another factory's
    foreign = "not-a-machine"
    machines = tmp_path / "machines"
    (machines / living).mkdir(parents=True)
    cg = v1_host(tmp_path, [living, vanished, other, foreign])
    assert cp.release_leftovers(str(machines), FACTORY, cg) == [vanished]
    assert parent_dirs(tmp_path, vanished) == []
    for kept in (living, other, foreign):
        assert parent_dirs(tmp_path, kept) == list(CONTROLLERS), kept


def test_release_finds_the_slice_by_the_directory_name_too(tmp_path, monkeypatch):
    cg = v2_tree(tmp_path, cp.slice_path(SLICE), 1)
    ran = []
    monkeypatch.setattr(cp.subp, "run", lambda argv, timeout: ran.append(list(argv)))
    assert cp.present(cg) == {DIR_NAME}
    directory = MachineDir(str(tmp_path / "machines" / DIR_NAME))
    assert cp.release(directory, cg)            # no backend.json at all
    assert ran == [["systemctl", "stop", SLICE]]


def test_unescape_undoes_escape():
    for text in (DIR_NAME, "a-b c/d:é", ".x.y_Z9", ""):
        assert cp.unescape(cp.escape(text)) == text
    assert cp.unescape("a-b") is None and cp.unescape("\\xzz") is None
