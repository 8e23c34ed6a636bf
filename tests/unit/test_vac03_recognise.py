# SPDX-License-Identifier: BSD-2-Clause
"""Recognising the original's machines over fake /proc, cgroup trees and engines'
answers: what is adopted, and every near miss that must not be."""
from __future__ import annotations

import os

import pytest

from vac.backends.apptainer import vac03 as app03
from vac.backends.docker import vac03 as dock03
from vac.host.cgroups import Hierarchy
from vac.machine.directory import MachineDir
from vac.paths import Paths

UID = 990
JOB = "0c8f4f0e-35f1-4a4e-9d55-2f6a3b1b2c3d"
NAME = "f1-00.example.com"


@pytest.fixture
def env(tmp_path):
    cg = {c: str(tmp_path / "cg" / c) for c in ("cpu", "cpuacct", "memory")}
    for root in cg.values():
        os.makedirs(root)
    proc = tmp_path / "proc"
    paths = Paths(str(tmp_path / "state"))
    paths.ensure()
    d = MachineDir(paths.machine_dir(1700000000, "alpha", NAME))
    os.makedirs(d.file("jobfeatures"))
    d.write("jobfeatures/job_id", JOB)
    d.write("pid", "4242")
    return Hierarchy(1, cg), str(proc), d, paths


def fake_process(proc: str, pid: int, uid: int, cgroup: str, ppid: int = 1) -> None:
    os.makedirs(os.path.join(proc, str(pid)))
    stat = f"{pid} (apptainer) S {ppid} " + " ".join(["0"] * 9) + " 150 50 0 0" + \
        " 0" * 4 + " 777" + " 0" * 20
    with open(os.path.join(proc, str(pid), "stat"), "w") as f:
        f.write(stat)
    with open(os.path.join(proc, str(pid), "status"), "w") as f:
        f.write(f"Name:\tapptainer\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    with open(os.path.join(proc, str(pid), "cgroup"), "w") as f:
        f.write(f"5:memory:{cgroup}\n4:cpu:{cgroup}\n")


def legacy_cgroup(hierarchy: Hierarchy) -> None:
    for controller in ("cpu", "memory"):
        os.makedirs(os.path.join(hierarchy.root(controller), "vac", f"singularity-{JOB}"))


def test_a_process_of_the_user_in_the_originals_cgroup_is_adopted(env):
    hierarchy, proc, d, _ = env
    legacy_cgroup(hierarchy)
    fake_process(proc, 4242, UID, f"/vac/singularity-{JOB}")
    record = app03.recognise(d, UID, hierarchy, "vac", proc)
    assert record["adopted"] == "vac03" and record["pid"] == 4242
    assert record["start_time"] == 777 and record["cgroup"] == f"/vac/singularity-{JOB}"
    assert record["cgroup_inode"] is not None
    assert app03.tree_cpu_seconds([4242], proc) == pytest.approx(200 / app03.TICKS)


def test_without_the_cgroup_a_process_in_no_vac_cgroup_is_its_process_tree(env):
    hierarchy, proc, d, _ = env
    fake_process(proc, 4242, UID, "/user.slice")
    fake_process(proc, 4300, UID, "/user.slice", ppid=4242)
    fake_process(proc, 4301, UID, "/user.slice", ppid=4300)
    fake_process(proc, 4400, UID, "/user.slice", ppid=1)       # another of the user's
    record = app03.recognise(d, UID, hierarchy, "vac", proc)
    assert record is not None and record["cgroup_inode"] is None
    assert sorted(app03.tree(4242, UID, proc)) == [4242, 4300, 4301]


@pytest.mark.parametrize("case", ["other uid", "other cgroup", "our cgroup", "finished",
                                  "no pid", "bad job_id", "gone"])
def test_near_misses_are_not_adopted(env, case):
    hierarchy, proc, d, _ = env
    legacy_cgroup(hierarchy)
    where = {"other cgroup": "/vac/singularity-someone-else",
             "our cgroup": f"/vac/apptainer-{NAME}"}.get(case, f"/vac/singularity-{JOB}")
    if case != "gone":
        fake_process(proc, 4242, 0 if case == "other uid" else UID, where)
    if case == "finished":
        d.write("finished", "")
    if case == "no pid":
        d.remove("pid")
    if case == "bad job_id":
        d.write("jobfeatures/job_id", "../../etc")
    assert app03.recognise(d, UID, hierarchy, "vac", proc) is None


def test_without_the_cgroup_a_process_in_another_vac_cgroup_is_not_adopted(env):
    hierarchy, proc, d, _ = env
    fake_process(proc, 4242, UID, f"/vac/apptainer-{NAME}")
    assert app03.recognise(d, UID, hierarchy, "vac", proc) is None


# ---- Docker --------------------------------------------------------------------------------

def inspected(d: MachineDir, **changes) -> dict:
    """An engine's inspect of a container started with Vac 03's docker run argv."""
    attrs = {"Id": "ab" * 32, "Name": f"/{NAME}",
             "Config": {"Hostname": NAME, "Labels": {}, "Image": "busybox"},
             "HostConfig": {"MemoryReservation": 64 * 1048576, "CgroupParent": ""},
             "Mounts": [{"Type": "bind", "Source": d.file("joboutputs"),
                         "Destination": "/var/spool/joboutputs"},
                        {"Type": "bind", "Source": d.file("user_data"),
                         "Destination": "/user_data"}]}
    attrs.update(changes)
    return attrs


def test_docker_container_started_by_vac03_is_recognised(env):
    _, _, d, paths = env
    attrs = inspected(d)
    assert dock03.started_by_vac03(attrs, d)
    assert dock03.vac03_directory(attrs, paths).path == d.path
    record = dock03.adoption_record(attrs, d)
    assert record["adopted"] == "vac03" and record["container_id"] == "ab" * 32
    assert record["memory_mb"] == 64


@pytest.mark.parametrize("changes", [
    {"Name": "/f1-01.example.com"},
    {"Config": {"Hostname": "other", "Labels": {}}},
    {"Config": {"Hostname": NAME, "Labels": {"vac.factory": "f1.example.com"}}},
    {"Mounts": []},
    {"Mounts": [{"Type": "bind", "Source": "/elsewhere/joboutputs",
                 "Destination": "/var/spool/joboutputs"}]},
])
def test_docker_near_misses_are_not_vac03s(env, changes):
    _, _, d, paths = env
    attrs = inspected(d, **changes)
    assert not dock03.started_by_vac03(attrs, d)
    if "Name" not in changes:
        assert dock03.vac03_directory(attrs, paths) is None
