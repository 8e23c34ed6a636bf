# SPDX-License-Identifier: BSD-2-Clause
"""vac.host.cgroups parsers, and vac.host.cgroupmachine create/limit/read/kill/remove on a fake
v1 and v2 tree."""
from __future__ import annotations

import errno
import os

import pytest
from cgroupfakes import MOUNTS_DEV, MOUNTS_EL7, MOUNTS_EL9, put, v1_tree, v2_tree

from vac.host import cgroupmachine, cgroups
from vac.host.cgroupmachine import CgroupError, MachineCgroup
from vac.host.cgroups import Hierarchy


# Parsers --------------------------------------------------------------------------------

def test_mounts_of_a_hybrid_v1_host_use_the_v1_controllers():
    h = cgroups.parse_mountinfo(MOUNTS_DEV).for_machines()
    assert h.version == 1
    assert h.mounts == {"cpu": "/sys/fs/cgroup/cpu", "cpuacct": "/sys/fs/cgroup/cpuacct",
                        "memory": "/sys/fs/cgroup/memory"}


def test_mounts_with_cpu_and_cpuacct_combined_share_one_directory():
    h = cgroups.parse_mountinfo(MOUNTS_EL7).for_machines()
    assert h.root("cpu") == h.root("cpuacct") == "/sys/fs/cgroup/cpu,cpuacct"
    assert h.root("memory") == "/sys/fs/cgroup/memory"


def test_mounts_of_a_unified_host_are_v2():
    h = cgroups.parse_mountinfo(MOUNTS_EL9).for_machines()
    assert h == Hierarchy(2, {"": "/sys/fs/cgroup"})
    assert h.root("memory") == h.root("cpuacct") == "/sys/fs/cgroup"


def test_mount_points_with_escaped_spaces_are_unescaped():
    h = cgroups.parse_mountinfo("40 1 0:37 / /mnt/my\\040cg rw - cgroup cgroup rw,memory\n"
                                ).for_machines()
    assert h.root("memory") == "/mnt/my cg"


def test_cpu_and_memory_counters_parse():
    assert cgroups.cpu_seconds_v1("2500000000\n") == 2.5
    assert cgroups.cpu_seconds_v1("") == 0.0
    assert cgroups.cpu_seconds_v2("usage_usec 1500000\nuser_usec 1000000\n") == 1.5
    assert cgroups.cpu_seconds_v2("user_usec 7\n") == 0.0
    assert cgroups.oom_kills_v1("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n") == 3
    assert cgroups.oom_kills_v1("oom_kill_disable 0\nunder_oom 1\n") == 1  # pre-4.13 kernels
    assert cgroups.oom_kills_v1("oom_kill_disable 0\nunder_oom 0\n") == 0
    assert cgroups.oom_kills_v2("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\n") == 1
    assert cgroups.parse_pids("12\n7\n\n") == {7, 12}


def test_weights_scale_with_processors():
    assert [cgroups.cpu_shares(p) for p in (1, 4)] == [1024, 4096]
    assert [cgroups.cpu_weight(p) for p in (1, 4, 500)] == [100, 400, 10000]


def test_in_cgroup_respects_path_boundaries():
    assert cgroups.in_cgroup("/vac/apptainer-a", "/vac/apptainer-a")
    assert cgroups.in_cgroup("/vac/apptainer-a/sub", "/vac/apptainer-a")
    assert not cgroups.in_cgroup("/vac/apptainer-ab", "/vac/apptainer-a")
    assert not cgroups.in_cgroup("/", "/vac/apptainer-a")


def test_membership_is_read_from_memory_on_v1_and_unified_on_v2():
    assert cgroups.membership_key(Hierarchy(1, {})) == "memory"
    assert cgroups.membership_key(Hierarchy(2, {"": "/x"})) == ""


def test_names_with_slashes_are_refused():
    with pytest.raises(CgroupError):
        MachineCgroup(Hierarchy(2, {"": "/x"}), "../etc")


# v1 -------------------------------------------------------------------------------------

def test_v1_create_makes_each_controller_cgroup_with_shares_and_hard_limit(tmp_path):
    h, kernel = v1_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(processors=2, memory_bytes=64 << 20)
    assert cg.exists()
    assert cg.relative_path == "/vac/apptainer-m1"
    assert cg.procs_files == [str(tmp_path / c / "vac" / "apptainer-m1" / "cgroup.procs")
                              for c in ("cpu", "cpuacct", "memory")]
    assert (tmp_path / "cpu/vac/apptainer-m1/cpu.shares").read_text() == "2048"
    assert (tmp_path / "memory/vac/apptainer-m1/memory.limit_in_bytes").read_text() \
        == str(64 << 20)
    assert cg.memory_limit() == 64 << 20


def test_v1_combined_cpu_cpuacct_gives_two_directories(tmp_path):
    h, kernel = v1_tree(tmp_path, combined=True)
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(processors=1, memory_bytes=1 << 20)
    assert len(cg.dirs) == 2
    assert (tmp_path / "cpu,cpuacct/vac/apptainer-m1/cpu.shares").read_text() == "1024"


def test_v1_without_a_memory_controller_is_an_error(tmp_path):
    h, kernel = v1_tree(tmp_path)
    h = Hierarchy(1, {k: v for k, v in h.mounts.items() if k != "memory"})
    with pytest.raises(CgroupError, match="no memory controller"):
        MachineCgroup(h, "apptainer-m1", fs=kernel).create(1, 1 << 20)


def test_v1_reads_cpu_seconds_oom_kills_and_pids_of_the_whole_subtree(tmp_path):
    h, kernel = v1_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(1, 1 << 20)
    mem = cg.dir("memory")
    put(cg.dir("cpuacct"), "cpuacct.usage", "3000000000\n")
    put(mem, "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    put(mem, "cgroup.procs", "10\n11\n")
    kernel.mkdir(os.path.join(mem, "child"))
    put(os.path.join(mem, "child"), "cgroup.procs", "12\n")
    assert cg.cpu_seconds() == 3.0
    assert cg.oom_kills() == 2
    assert cg.pids() == {10, 11, 12}


def test_an_absent_cgroup_reads_as_zero_and_empty(tmp_path):
    h, kernel = v1_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-gone", fs=kernel)
    assert not cg.exists()
    assert (cg.cpu_seconds(), cg.oom_kills(), cg.pids(), cg.memory_limit()) == (0.0, 0, set(),
                                                                                None)
    assert cg.kill() and cg.remove()


def test_v1_kill_sigkills_every_pid_including_descendants_until_empty(tmp_path):
    h, kernel = v1_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(1, 1 << 20)
    for d in cg.dirs:
        put(d, "cgroup.procs", "20\n21\n")
    kernel.mkdir(os.path.join(cg.dir("memory"), "inner"))
    put(os.path.join(cg.dir("memory"), "inner"), "cgroup.procs", "22\n")
    assert cg.kill()
    assert sorted(set(kernel.killed)) == [20, 21, 22]
    assert cg.pids() == set()
    assert cg.remove()
    assert not cg.exists()
    assert not (tmp_path / "memory/vac/apptainer-m1").exists()


def test_kill_gives_up_on_a_process_that_will_not_die(tmp_path):
    h, kernel = v1_tree(tmp_path)
    kernel.immortal = {30}
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(1, 1 << 20)
    put(cg.dir("memory"), "cgroup.procs", "30\n31\n")
    assert cg.kill(timeout=0.05) is False
    assert cg.pids() == {30}
    assert cg.remove(timeout=0.05) is False  # busy: reported, not raised
    assert cg.exists()


def test_remove_refuses_nothing_but_busy_cgroups(tmp_path):
    h, kernel = v1_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(1, 1 << 20)

    def broken(path):
        raise PermissionError(errno.EPERM, "Operation not permitted", path)

    kernel.rmdir = broken
    with pytest.raises(CgroupError, match="not permitted"):
        cg.remove()


def test_list_children_finds_vac_cgroups_by_prefix_in_any_hierarchy(tmp_path):
    h, kernel = v1_tree(tmp_path)
    for name in ("apptainer-a", "singularity-000123-x", "docker-z"):
        MachineCgroup(h, name, fs=kernel).create(1, 1 << 20)
    os.makedirs(tmp_path / "memory" / "vac" / "apptainer-only-memory")
    assert cgroupmachine.list_children(h, ("apptainer-",), fs=kernel) == [
        "apptainer-a", "apptainer-only-memory"]
    assert cgroupmachine.list_children(h, ("apptainer-", "singularity-"), fs=kernel) == [
        "apptainer-a", "apptainer-only-memory", "singularity-000123-x"]
    assert cgroupmachine.list_children(Hierarchy(1, {"memory": str(tmp_path / "none")}),
                                       ("apptainer-",), fs=kernel) == []


# v2 -------------------------------------------------------------------------------------

def test_v2_create_enables_controllers_and_sets_weight_and_memory_max(tmp_path):
    h, kernel = v2_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m2", fs=kernel)
    cg.create(processors=3, memory_bytes=96 << 20)
    root = tmp_path / "unified"
    assert (root / "cgroup.subtree_control").read_text().split() == ["cpu", "memory"]
    assert (root / "vac" / "cgroup.subtree_control").read_text().split() == ["cpu", "memory"]
    assert (root / "vac/apptainer-m2/cpu.weight").read_text() == "300"
    assert (root / "vac/apptainer-m2/memory.max").read_text() == str(96 << 20)
    assert cg.procs_files == [str(root / "vac/apptainer-m2/cgroup.procs")]
    assert cg.memory_limit() == 96 << 20


def test_v2_without_the_memory_controller_is_an_error(tmp_path):
    h, kernel = v2_tree(tmp_path, refuse={"memory"})
    with pytest.raises(CgroupError, match="memory controller not enabled"):
        MachineCgroup(h, "apptainer-m2", fs=kernel).create(1, 1 << 20)


def test_v2_without_the_cpu_controller_still_limits_memory(tmp_path):
    h, kernel = v2_tree(tmp_path, refuse={"cpu"})
    cg = MachineCgroup(h, "apptainer-m2", fs=kernel)
    cg.create(1, 1 << 20)
    assert cg.memory_limit() == 1 << 20
    assert not os.path.exists(os.path.join(cg.dir(""), "cpu.weight"))


def test_v2_reads_cpu_stat_and_memory_events(tmp_path):
    h, kernel = v2_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m2", fs=kernel)
    cg.create(1, 1 << 20)
    put(cg.dir(""), "cpu.stat", "usage_usec 4250000\nuser_usec 4000000\nsystem_usec 250000\n")
    put(cg.dir(""), "memory.events", "low 0\nhigh 0\nmax 40\noom 1\noom_kill 1\n")
    assert cg.cpu_seconds() == 4.25
    assert cg.oom_kills() == 1


def test_v2_kill_uses_cgroup_kill_where_present(tmp_path):
    h, kernel = v2_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m2", fs=kernel)
    cg.create(1, 1 << 20)
    put(cg.dir(""), "cgroup.procs", "40\n41\n")
    assert cg.kill()
    assert kernel.kill_writes == [cg.dir("")]
    assert kernel.killed == []
    assert cg.remove()


def test_v2_kill_without_cgroup_kill_signals_each_pid(tmp_path):
    h, kernel = v2_tree(tmp_path, has_kill=False)
    cg = MachineCgroup(h, "apptainer-m2", fs=kernel)
    cg.create(1, 1 << 20)
    put(cg.dir(""), "cgroup.procs", "50\n51\n")
    assert cg.kill()
    assert sorted(kernel.killed) == [50, 51]
    assert kernel.kill_writes == []


def test_writable_reports_a_missing_memory_controller(tmp_path):
    h, _ = v2_tree(tmp_path)
    assert cgroupmachine.writable(h) == (True, "")
    (tmp_path / "unified" / "cgroup.controllers").write_text("cpu io pids\n")
    ok, reason = cgroupmachine.writable(h)
    assert not ok and "memory controller" in reason
    ok, reason = cgroupmachine.writable(Hierarchy(1, {"cpu": str(tmp_path)}))
    assert not ok and "no memory hierarchy" in reason
