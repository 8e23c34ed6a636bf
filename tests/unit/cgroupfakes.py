# SPDX-License-Identifier: BSD-2-Clause
"""Mount tables of real hosts, a fake cgroup file system over plain directories (FakeKernel),
v1 and v2 trees made with it, and put() to write a control file."""
from __future__ import annotations

import errno
import os
import shutil

from vac.host import cgroups
from vac.host.cgroups import Hierarchy

# /proc/self/mountinfo of the development machines: v1 with separate cpu and cpuacct
# hierarchies and an empty cgroup2 at /sys/fs/cgroup/unified (hybrid).
MOUNTS_DEV = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
MOUNTS_EL7 = """\
27 24 0:23 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup \
rw,cpuacct,cpu
28 24 0:24 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
"""
MOUNTS_EL9 = """\
26 23 0:25 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,seclabel,nsdelegate
"""


class FakeKernel(cgroups.CgroupFS):
    """cgroupfs semantics over plain directories: mkdir makes the control files, rmdir
    refuses a cgroup with processes or children, cgroup.kill and SIGKILL empty procs."""

    def __init__(self, version: int, immortal=(), refuse=(), has_kill=True):
        self.version = version
        self.immortal = set(immortal)
        self.refuse = set(refuse)   # v2 controllers that cannot be enabled
        self.has_kill = has_kill
        self.killed = []
        self.kill_writes = []

    def mkdir(self, path):
        os.mkdir(path)
        files = {"cgroup.procs": ""}
        if self.version == 2:
            files.update({"cgroup.subtree_control": "", "cpu.stat": "usage_usec 0\n",
                          "memory.events": "oom 0\noom_kill 0\n"})
            if self.has_kill:
                files["cgroup.kill"] = ""
            enabled = self.read(os.path.join(os.path.dirname(path),
                                             "cgroup.subtree_control")).split()
            if "cpu" in enabled:
                files["cpu.weight"] = "100\n"
            if "memory" in enabled:
                files["memory.max"] = "max\n"
        else:
            files.update({"cpu.shares": "1024\n", "cpuacct.usage": "0\n",
                          "memory.limit_in_bytes": "9223372036854771712\n",
                          "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"})
        for name, text in files.items():
            with open(os.path.join(path, name), "w") as f:
                f.write(text)

    def rmdir(self, path):
        if not os.path.isdir(path):
            raise FileNotFoundError(errno.ENOENT, "absent", path)
        if self.listdir(path) or cgroups.parse_pids(self.read(os.path.join(path,
                                                                          "cgroup.procs"))):
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        shutil.rmtree(path)

    def write(self, path, value):
        name = os.path.basename(path)
        if not os.path.exists(path):
            raise PermissionError(errno.EACCES, "cannot create files in cgroupfs", path)
        if name == "cgroup.subtree_control":
            controller = value.lstrip("+")
            if controller in self.refuse:
                raise OSError(errno.ENOENT, "No such file or directory", path)
            enabled = self.read(path).split()
            value = " ".join(sorted(set(enabled) | {controller}))
        elif name == "cgroup.kill":
            self.kill_writes.append(os.path.dirname(path))
            for top, _, _ in os.walk(os.path.dirname(path)):
                keep = cgroups.parse_pids(self.read(os.path.join(top, "cgroup.procs")))
                self._set_procs(top, keep & self.immortal)
            return
        elif name == "cgroup.procs":
            value = self.read(path) + value + "\n"
        with open(path, "w") as f:
            f.write(value)

    def kill(self, pid):
        self.killed.append(pid)
        if pid in self.immortal:
            return
        for root in self.roots:
            for top, _, files in os.walk(root):
                if "cgroup.procs" in files:
                    self._set_procs(top, cgroups.parse_pids(
                        self.read(os.path.join(top, "cgroup.procs"))) - {pid})

    def sleep(self, seconds):
        pass

    def _set_procs(self, directory, pids):
        with open(os.path.join(directory, "cgroup.procs"), "w") as f:
            f.write("".join(f"{p}\n" for p in sorted(pids)))


def v1_tree(tmp_path, combined=False):
    names = {"cpu": "cpu,cpuacct", "cpuacct": "cpu,cpuacct"} if combined else {}
    mounts = {}
    for c in cgroups.V1_CONTROLLERS:
        mounts[c] = str(tmp_path / names.get(c, c))
        os.makedirs(mounts[c], exist_ok=True)
    kernel = FakeKernel(1)
    kernel.roots = sorted(set(mounts.values()))
    return Hierarchy(1, mounts), kernel


def v2_tree(tmp_path, **kw):
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("")
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    kernel = FakeKernel(2, **kw)
    kernel.roots = [str(root)]
    return Hierarchy(2, {"": str(root)}), kernel


def put(cgroup_dir, name, text):
    with open(os.path.join(cgroup_dir, name), "w") as f:
        f.write(text)
