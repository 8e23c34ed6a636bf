# SPDX-License-Identifier: BSD-2-Clause
"""Delegation of a machine's cgroup v2 subtree on a fake tree: vac.host.delegation,
MachineCgroup.delegate, and vac.host.cgroupmount's safety checks on mountinfo text. The real
kernel's answers (permission errors, nsdelegate, OOM in a child) are proved in the cgroup v2
guest: tests/integration/test_cgroup_delegation.py."""
from __future__ import annotations

import os

import pytest
from cgroupfakes import MOUNTS_DEV, FakeKernel, put, v1_tree, v2_tree

from vac.host import cgroupmount, cgroups, delegation
from vac.host.cgroupmachine import CgroupError, MachineCgroup


class DelegatingKernel(FakeKernel):
    """FakeKernel whose cgroups list the controllers their parent gives them, and which
    records chown calls."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.owners = {}

    def mkdir(self, path):
        super().mkdir(path)
        put(path, "cgroup.controllers", "")   # read from the parent, as the kernel does
        put(path, "cgroup.threads", "")

    def read(self, path):
        directory, name = os.path.split(path)
        if name == "cgroup.controllers" and directory not in self.roots:
            return super().read(os.path.join(os.path.dirname(directory),
                                             "cgroup.subtree_control"))
        return super().read(path)

    def chown(self, path, uid, gid):
        self.owners[path] = (uid, gid)


def tree(tmp_path):
    h, _ = v2_tree(tmp_path)
    kernel = DelegatingKernel(2)
    kernel.roots = [h.root("")]
    return h, kernel


def test_apptainer_cgroup_is_delegated_to_the_user_with_its_limits_kept_root_s(tmp_path):
    h, kernel = tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m1", fs=kernel)
    cg.create(processors=2, memory_bytes=64 << 20)
    assert cg.delegate(1234, 99) == "/vac/apptainer-m1/leaf"
    root = tmp_path / "unified"
    top, leaf = root / "vac/apptainer-m1", root / "vac/apptainer-m1/leaf"
    for d in (root, root / "vac", top):
        assert (d / "cgroup.subtree_control").read_text().split() == ["cpu", "io", "memory",
                                                                       "pids"]
    assert cg.procs_files == [str(leaf / "cgroup.procs")]   # new processes start in the leaf
    handed = {str(d / f) for d in (top, leaf) for f in delegation.DELEGATED_FILES}
    handed |= {str(top), str(leaf)}
    assert set(kernel.owners) == handed
    assert set(kernel.owners.values()) == {(1234, 99)}
    assert str(top / "memory.max") not in kernel.owners and cg.memory_limit() == 64 << 20
    assert cg.pids() == set()
    put(str(leaf), "cgroup.procs", "77\n")
    assert cg.pids() == {77}                # processes in the leaf are the machine's


def test_delegation_enables_only_the_controllers_the_host_has(tmp_path):
    h, kernel = tree(tmp_path)
    (tmp_path / "unified" / "cgroup.controllers").write_text("cpu memory\n")
    cg = MachineCgroup(h, "apptainer-m2", fs=kernel)
    cg.create(processors=1, memory_bytes=32 << 20)
    cg.delegate(1, 1)
    top = tmp_path / "unified/vac/apptainer-m2"
    assert (top / "cgroup.subtree_control").read_text().split() == ["cpu", "memory"]


def test_delegation_needs_v2(tmp_path):
    h, kernel = v1_tree(tmp_path)
    cg = MachineCgroup(h, "apptainer-m3", fs=kernel)
    cg.create(processors=1, memory_bytes=32 << 20)
    with pytest.raises(CgroupError, match="needs cgroup v2"):
        cg.delegate(1, 1)


def test_move_all_empties_the_container_cgroup_into_its_leaf_then_enables(tmp_path):
    h, kernel = tree(tmp_path)
    root = tmp_path / "unified"
    for c in ("cpu", "memory", "pids"):
        kernel.write(str(root / "cgroup.subtree_control"), f"+{c}")
    top = root / "ctr"
    kernel.mkdir(str(top))
    put(str(top), "cgroup.procs", "10\n11\n")

    class Moving(DelegatingKernel):
        def write(self, path, value):
            if os.path.basename(path) == "cgroup.procs" and path.endswith("/leaf/cgroup.procs"):
                left = cgroups.parse_pids(self.read(str(top / "cgroup.procs")))
                self._set_procs(str(top), left - {int(value)})
            super().write(path, value)

    kernel.__class__ = Moving
    delegation.move_all(kernel, str(top), str(top / "leaf"))
    assert cgroups.parse_pids((top / "cgroup.procs").read_text()) == set()
    assert cgroups.parse_pids((top / "leaf/cgroup.procs").read_text()) == {10, 11}
    assert (top / "cgroup.subtree_control").read_text().split() == ["cpu", "memory", "pids"]


def test_move_all_gives_up_on_processes_that_stay(tmp_path):
    h, kernel = tree(tmp_path)
    top = tmp_path / "unified" / "ctr"
    kernel.mkdir(str(top))
    put(str(top), "cgroup.procs", "10\n")     # writes to the leaf never move it here
    with pytest.raises(delegation.DelegationError, match="1 processes stay"):
        delegation.move_all(kernel, str(top), str(top / "leaf"), timeout=0.05)


HOST = "26 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 {}\n"
CONTAINER = ("500 400 0:60 / / rw - overlay overlay rw\n"
             "510 500 0:22 / /sys ro,nosuid - sysfs sysfs ro\n"
             "511 510 0:25 {} /sys/fs/cgroup ro,nosuid,nodev,noexec - cgroup2 cgroup2 rw{}\n")


def test_host_must_mount_cgroup2_nsdelegate():
    assert cgroupmount.host_delegates(HOST.format("rw,seclabel,nsdelegate"))
    assert not cgroupmount.host_delegates(HOST.format("rw,seclabel"))
    hybrid = "41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate\n"
    assert not cgroupmount.host_delegates(hybrid)


def fake_proc(tmp_path, host_opts, container_root, same_ns=False):
    proc = tmp_path / "proc"
    for pid, text in (("self", HOST.format(host_opts)),
                      ("42", CONTAINER.format(container_root, ""))):
        (proc / pid / "ns").mkdir(parents=True)
        (proc / pid / "mountinfo").write_text(text)
    (proc / "self/ns/cgroup").write_text("")
    if same_ns:
        os.link(proc / "self/ns/cgroup", proc / "42/ns/cgroup")
    else:
        (proc / "42/ns/cgroup").write_text("")
    return str(proc)


def test_a_container_mount_is_made_writable_only_when_safe(tmp_path):
    own = "/vac.slice/vac-docker-a\\x2db.slice/docker-1.scope"   # as /proc/<pid>/cgroup has it
    escaped = own.replace("\\", "\\134")     # and mountinfo, read from the host
    cgroupmount.check(42, own, fake_proc(tmp_path / "a", "rw,nsdelegate", escaped))
    cases = {"b": ("rw", own, False, "not mounted nsdelegate"),
             "c": ("rw,nsdelegate", own, True, "shares the host's cgroup namespace"),
             "d": ("rw,nsdelegate", "/system.slice", False, "no cgroup2 mount of its own"),
             "e": ("rw,nsdelegate", "/", False, "no cgroup2 mount of its own")}
    for sub, (opts, root, same, why) in cases.items():
        with pytest.raises(cgroupmount.CgroupMountError, match=why):
            cgroupmount.check(42, own, fake_proc(tmp_path / sub, opts, root, same))


def test_doctor_says_whether_machines_get_their_cgroup_delegated(tmp_path, monkeypatch):
    from vac.ops import delegationcheck

    def doctor(mountinfo):
        proc = tmp_path / "proc" / "self"
        proc.mkdir(parents=True, exist_ok=True)
        (proc / "mountinfo").write_text(mountinfo)
        return delegationcheck.host_delegation(str(tmp_path / "proc"))[0]

    v1 = doctor(MOUNTS_DEV)
    assert v1.status == "ok" and "not supported" in v1.detail
    monkeypatch.setattr(delegationcheck.delegation, "available", lambda fs, d: ["cpu", "memory"])
    plain = doctor(HOST.format("rw,seclabel"))
    assert plain.status == "warn" and "nsdelegate" in plain.detail and plain.fix
    good = doctor(HOST.format("rw,nsdelegate"))
    assert good.status == "ok" and "cpu memory" in good.detail
