# SPDX-License-Identifier: BSD-2-Clause
"""Accounting, OOM detection and destroy of a machine whose payload has moved its processes
into child cgroups of its delegated cgroup, over fake v2 trees.

On cgroup v2 the kernel counts a cgroup's children in its own cpu.stat usage_usec and in its
memory.events (memory.events.local holds the cgroup's own events only), so reading the
machine's cgroup (Apptainer) or the container's parent (Docker) is reading the whole subtree:
these tests put different numbers in the machine's files and its children's and check that
the machine's are the ones read. A live Docker container without a cgroup parent of Vac's is
read at the root of its cgroup namespace, not at the cgroup its first process sits in. The
kernel's sums themselves are proved in the cgroup v2 guest
(tests/integration/test_cgroup_delegation.py)."""
from __future__ import annotations

import os

import pytest
from cgroupfakes import FakeKernel, put, v2_tree

from vac.backends.docker import cgroupparent
from vac.backends.docker import delegation as docker_delegation
from vac.host import cgroupmount, cgroups
from vac.host.cgroupmachine import MachineCgroup

# The kernel's view of a payload that made hog and calm beside the leaf: usage_usec of the
# machine is the sum of its subtree's; oom_kill in memory.events too; memory.events.local not.
CPU = {"": 9_000_000, "leaf": 1_000_000, "hog": 500_000, "calm": 7_500_000}
EVENTS = {"": "oom 1\noom_kill 1\n", "leaf": "oom 0\noom_kill 0\n",
          "hog": "oom 1\noom_kill 1\n", "calm": "oom 0\noom_kill 0\n"}
LOCAL = "oom 0\noom_kill 0\n"      # the machine's own processes were never OOM-killed


class QuietKernel(FakeKernel):
    """FakeKernel without chown (the tree belongs to whoever runs the tests)."""

    def chown(self, path, uid, gid):
        pass


def payload_tree(top, kernel):
    """The children a pilot makes (hog, calm and calm/inner), with its processes in them and
    the counters the kernel would show."""
    for child in ("hog", "calm", "calm/inner"):
        if not os.path.isdir(os.path.join(top, child)):
            kernel.mkdir(os.path.join(top, child))
    for child, usec in CPU.items():
        d = os.path.join(top, child)
        put(d, "cpu.stat", f"usage_usec {usec}\nuser_usec {usec}\nsystem_usec 0\n")
        put(d, "memory.events", EVENTS[child])
        put(d, "memory.events.local", LOCAL if child in ("", "leaf", "calm") else EVENTS[child])
    put(os.path.join(top, "leaf"), "cgroup.procs", "10\n")
    put(os.path.join(top, "hog"), "cgroup.procs", "11\n")
    put(os.path.join(top, "calm"), "cgroup.procs", "12\n")
    put(os.path.join(top, "calm/inner"), "cgroup.procs", "13\n14\n")


def delegated_machine(tmp_path, **kw):
    h, fake = v2_tree(tmp_path, **kw)
    kernel = QuietKernel(2, **kw)
    kernel.roots = fake.roots
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(processors=1, memory_bytes=64 << 20)
    cg.delegate(4242, 4242)
    payload_tree(cg.dir(""), kernel)
    return cg, kernel


def test_apptainer_cpu_seconds_and_oom_kills_are_the_whole_subtree_s(tmp_path):
    cg, _ = delegated_machine(tmp_path)
    assert cg.cpu_seconds() == 9.0            # the machine's usage_usec, not the leaf's 1.0
    assert cg.oom_kills() == 1                # memory.events (its children's), not .local


def test_docker_parent_cpu_seconds_and_oom_kills_are_the_whole_subtree_s(tmp_path):
    h, kernel = v2_tree(tmp_path)
    root = h.root("")
    unified = cgroups.Hierarchies(v2=cgroups.Mount("/", root))
    host = cgroups.Cgroups(proc_root=str(tmp_path), hierarchies=unified, fs=kernel)
    parent = "/vac/docker-1700000000:f1-01.example.com"
    for path in ("/vac", parent, f"{parent}/ctr", f"{parent}/ctr/leaf"):
        kernel.mkdir(root + path)
    payload_tree(root + f"{parent}/ctr", kernel)
    put(root + parent, "cpu.stat", "usage_usec 9000000\n")     # the container's, summed
    put(root + parent, "memory.events", "oom 1\noom_kill 1\n")
    put(root + parent, "memory.events.local", LOCAL)
    assert cgroupparent.cpu_seconds(parent, host) == 9.0
    assert cgroupparent.oom_kills(parent, host) == 1


@pytest.mark.parametrize("has_kill", [True, False])
def test_destroy_of_a_machine_with_processes_in_children_leaves_nothing(tmp_path, has_kill):
    cg, kernel = delegated_machine(tmp_path, has_kill=has_kill)
    assert cg.pids() == {10, 11, 12, 13, 14}
    assert cg.remove(timeout=0.05) is False      # busy while processes are in its children
    assert cg.kill(timeout=1.0)
    assert cg.pids() == set()
    if has_kill:
        assert kernel.kill_writes == [cg.dir("")]    # cgroup.kill of the machine: recursive
    else:
        assert sorted(kernel.killed) == [10, 11, 12, 13, 14]
    assert cg.remove()
    assert not cg.exists()
    vac = os.path.dirname(cg.dir(""))
    assert [d for d in os.listdir(vac) if os.path.isdir(os.path.join(vac, d))] == []


# A live Docker container without a parent of Vac's: read at its cgroup namespace's root ----

SCOPE = "/system.slice/docker-c0ffee.scope"
MOUNTINFO = ("500 400 0:60 / / rw - overlay overlay rw\n"
             "511 500 0:25 {root} /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n")


def container_host(tmp_path, own, root):
    """A fake host with a container whose first process (pid 42) is in `own` and whose
    /sys/fs/cgroup is the cgroup2 mount rooted at `root` (None: a tmpfs, as on v1)."""
    h, kernel = v2_tree(tmp_path)
    unified = h.root("")
    for path in ("/system.slice", SCOPE, f"{SCOPE}/leaf", f"{SCOPE}/pilot"):
        kernel.mkdir(unified + path)
    put(unified + SCOPE, "cpu.stat", "usage_usec 9000000\n")
    put(unified + f"{SCOPE}/pilot", "cpu.stat", "usage_usec 2000000\n")
    put(unified + "/system.slice", "cpu.stat", "usage_usec 99000000\n")
    proc = tmp_path / "proc" / "42"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(f"0::{own}\n")
    mount = MOUNTINFO.format(root=root) if root else \
        "511 500 0:25 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
    (proc / "mountinfo").write_text(mount)
    return cgroups.Cgroups(proc_root=str(tmp_path / "proc"), fs=kernel,
                           hierarchies=cgroups.Hierarchies(v2=cgroups.Mount("/", unified)))


def test_a_live_container_s_cpu_is_its_whole_cgroup_s_wherever_its_first_process_went(
        tmp_path):
    host = container_host(tmp_path, f"{SCOPE}/pilot", SCOPE)
    assert docker_delegation.cpu_seconds(42, host) == 9.0       # not the pilot's 2.0
    assert docker_delegation.cpu_seconds(43, host) is None      # gone


@pytest.mark.parametrize("root", [None, "/", "/system.slice/other.scope"])
def test_a_mount_root_that_is_not_the_process_s_own_ancestor_is_not_trusted(tmp_path, root):
    host = container_host(tmp_path, f"{SCOPE}/pilot", root)
    assert cgroupmount.namespace_root(42, f"{SCOPE}/pilot", host.proc_root) is None
    assert docker_delegation.cpu_seconds(42, host) == 2.0       # the process's own cgroup


def test_namespace_root_is_the_cgroup_itself_or_an_ancestor(tmp_path):
    host = container_host(tmp_path, SCOPE, SCOPE)
    assert cgroupmount.namespace_root(42, SCOPE, host.proc_root) == SCOPE
    assert cgroupmount.namespace_root(42, SCOPE + "x/leaf", host.proc_root) is None
    assert cgroupmount.namespace_root(42, None, host.proc_root) is None
