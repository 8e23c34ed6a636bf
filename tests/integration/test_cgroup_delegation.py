# SPDX-License-Identifier: BSD-2-Clause
"""A machine's cgroup delegated to its payload (issue 31), on the real kernel: runs in the
cgroup v2 guest (scripts/ci/v2-guest-run.sh), where Docker uses the systemd driver and the
host's cgroup2 is mounted nsdelegate. On a v1 host these tests skip (nothing is delegated
there, as vac.backends.docker.delegation and ApptainerBackend say).

Each payload makes two children of its own cgroup: `hog` with a memory.max far below the
slot's, where a memory hog runs, and `calm`, where a well-behaved process runs; it then moves
itself into a third child. The hog is OOM-killed in its child only; the payload goes on and
says so; its attempts to raise the slot's memory.max or to write outside its subtree fail
with a permission error; the slot's CPU seconds include the children's; destroy leaves no
cgroup and no process behind. A machinetype with cgroup_delegate off gets no subtree: the
Apptainer machine's processes stay in its root-owned cgroup, the Docker container's
/sys/fs/cgroup stays read-only, and neither can make a child.
"""
from __future__ import annotations

import dataclasses
import os
import time

import apptainer_backend_env as ap
import docker_backend_env as dk
import pytest
from apptainer_env import require_root, require_usable
from testbed import require_engine
from waiting import GENEROUS, wait_until

from vac.host import cgroups
from vac.machine.directory import MachineState

# $TOP is the delegated cgroup as the payload sees it; $O its joboutputs.
CHECKS = r"""
echo "$(sed -n 's/^0:://p' /proc/self/cgroup)" > $O/cgroup
cat $TOP/cgroup.subtree_control > $O/controllers
mkdir $TOP/hog $TOP/calm $TOP/pilot; echo $? > $O/mkdir_rc
echo 8M > $TOP/hog/memory.max; echo $? > $O/limit_rc
[ -e $TOP/hog/memory.swap.max ] && echo 0 > $TOP/hog/memory.swap.max
(echo max > $TOP/memory.max) 2> $O/raise_err; echo $? > $O/raise_rc
sh -c "echo \$\$ > $TOP/calm/cgroup.procs; i=0; while [ \$i -lt 30000 ]; do i=\$((i+1)); done; \
echo calm done > $O/calm; exec sleep 600" &
sh -c "echo \$\$ > $TOP/hog/cgroup.procs && exec sh -c 'head -c 300m /dev/zero | tail'"
echo $? > $O/hog_rc
echo $$ > $TOP/pilot/cgroup.procs; echo $? > $O/self_move_rc
sed -n 's/^0:://p' /proc/self/cgroup > $O/pilot_cgroup
until [ -s $O/calm ]; do sleep 0.2; done
sed -n 's/^oom_kill //p' $TOP/hog/memory.events > $O/hog_oom
sed -n 's/^oom_kill //p' $TOP/calm/memory.events > $O/calm_oom
sed -n 's/^usage_usec //p' $TOP/calm/cpu.stat > $O/calm_usec
echo "the pilot goes on after its payload's OOM" > $O/message
touch $O/ready
exec sleep 600
"""


def out(directory, key):
    return directory.read(f"joboutputs/{key}").strip()


def wait_ready(directory):
    path = directory.file("joboutputs/ready")
    assert wait_until(lambda: os.path.exists(path), GENEROUS), \
        "the payload never got ready: " + directory.read("console.log")[-2000:]


def assert_common(d):
    assert out(d, "mkdir_rc") == "0" and out(d, "limit_rc") == "0"
    assert out(d, "raise_rc") != "0"
    assert "ermission" in out(d, "raise_err") or "not permitted" in out(d, "raise_err")
    assert out(d, "hog_rc") != "0"            # killed
    assert int(out(d, "hog_oom")) >= 1 and out(d, "calm_oom") == "0"
    assert out(d, "calm") == "calm done" and out(d, "self_move_rc") == "0"
    assert out(d, "message") == "the pilot goes on after its payload's OOM"
    for c in ("cpu", "memory", "pids"):
        assert c in out(d, "controllers").split()


def need_v2():
    if cgroups.read_hierarchy().version != 2:
        pytest.skip("cgroup v1 host: nothing is delegated (the v2 guest runs these)")


# Apptainer --------------------------------------------------------------------------------

APPTAINER = r"""
O=/tmp/joboutputs
TOP=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup | sed 's,/leaf$,,')
ESCAPE=${TOP%/*}
(echo $$ > $ESCAPE/cgroup.procs) 2> $O/escape_err; echo $? > $O/escape_rc
(mkdir $ESCAPE/evil) 2> $O/outside_err; echo $? > $O/outside_rc
""" + CHECKS


@pytest.fixture
def app_env(make_config, tmp_path):
    need_v2()
    require_root()
    e = ap.Env(make_config, tmp_path)
    require_usable(e.backend)
    yield e
    e.cleanup()


def test_apptainer_payload_subdivides_its_slot_and_cannot_raise_or_escape_it(app_env):
    env = app_env
    spec = env.machine(APPTAINER)
    env.backend.create(spec)
    d = spec.directory
    wait_ready(d)
    cg = env.cgroup(spec)
    assert out(d, "cgroup") == f"{cg.relative_path}/leaf"
    assert out(d, "pilot_cgroup") == f"{cg.relative_path}/pilot"
    assert_common(d)
    for what in ("escape", "outside"):
        assert out(d, f"{what}_rc") != "0"
        assert "ermission" in out(d, f"{what}_err"), out(d, f"{what}_err")
    assert cg.memory_limit() == spec.memory_mb * 1024 * 1024   # the slot's limit, unchanged
    st = env.backend.status(spec.name, d)
    assert st.state is MachineState.RUNNING
    assert st.cpu_seconds >= int(out(d, "calm_usec")) / 1e6
    pids = cg.pids()
    assert len(pids) >= 2
    env.backend.destroy(spec.name, d)
    assert not cg.exists()
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")]


# Docker -----------------------------------------------------------------------------------

DOCKER = r"""#!/bin/sh
O=$JOBOUTPUTS
TOP=/sys/fs/cgroup
n=0; until grep -q ' /sys/fs/cgroup rw,' /proc/self/mountinfo; do n=$((n+1)); \
[ $n -gt 3000 ] && exit 9; sleep 0.1; done
(echo 1 > $TOP/cgroup.kill) 2> $O/kill_err; echo $? > $O/kill_rc
""" + CHECKS


def test_docker_payload_subdivides_its_slot_and_cannot_raise_or_escape_it(
        paths, make_backend):
    need_v2()
    backend = make_backend(mb=256)
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = dk.make_machine(paths, backend, 21, DOCKER)
    container_id = backend.create(spec)
    d = spec.directory
    wait_ready(d)
    assert out(d, "cgroup") == "/leaf" and out(d, "pilot_cgroup") == "/pilot"
    assert_common(d)
    assert out(d, "kill_rc") != "0" and "not permitted" in out(d, "kill_err")
    pid = dk.sdk().inspect_container(container_id)["State"]["Pid"]
    where = cgroups.Cgroups().of_pid(pid)[cgroups.V2]
    top = "/sys/fs/cgroup" + where.rsplit("/", 1)[0]
    with open(f"{top}/memory.max") as f:
        assert f.read().strip() == str(256 * 1024 * 1024) or not spec.machinetype.docker_hard_memory
    st = backend.status(spec.name, d)
    assert st.state is MachineState.RUNNING
    assert st.cpu_seconds >= int(out(d, "calm_usec")) / 1e6
    backend.destroy(spec.name, d)
    deadline = time.monotonic() + GENEROUS
    while os.path.exists(top) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(top), f"{top} left behind"
    assert not os.path.exists(f"/proc/{pid}")


# cgroup_delegate = false: the machine's cgroup is not delegated ----------------------------

def undelegated(spec):
    """The spec with its machinetype's cgroup_delegate off."""
    mt = dataclasses.replace(spec.machinetype, cgroup_delegate=False)
    return dataclasses.replace(spec, machinetype=mt)


APPTAINER_OFF = r"""
O=/tmp/joboutputs
TOP=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
sed -n 's/^0:://p' /proc/self/cgroup > $O/cgroup
(mkdir $TOP/child) 2> $O/mkdir_err; echo $? > $O/mkdir_rc
touch $O/ready
exec sleep 600
"""


def test_apptainer_machine_of_a_machinetype_with_cgroup_delegate_off_gets_no_subtree(app_env):
    env = app_env
    spec = undelegated(env.machine(APPTAINER_OFF))
    env.backend.create(spec)
    d = spec.directory
    wait_ready(d)
    cg = env.cgroup(spec)
    assert out(d, "cgroup") == cg.relative_path                 # no leaf
    assert out(d, "mkdir_rc") != "0" and "ermission" in out(d, "mkdir_err")
    assert not os.path.isdir(os.path.join(cg.dir(""), "leaf"))
    assert os.stat(cg.dir("")).st_uid == 0
    assert cg.memory_limit() == spec.memory_mb * 1024 * 1024
    env.backend.destroy(spec.name, d)
    assert not cg.exists()


DOCKER_OFF = r"""#!/bin/sh
O=$JOBOUTPUTS
n=0; until [ -e $O/go ]; do n=$((n+1)); [ $n -gt 3000 ] && exit 9; sleep 0.1; done
grep ' /sys/fs/cgroup ' /proc/self/mountinfo | cut -d' ' -f6 | cut -d, -f1 > $O/mount
(mkdir /sys/fs/cgroup/child) 2> $O/mkdir_err; echo $? > $O/mkdir_rc
sed -n 's/^0:://p' /proc/self/cgroup > $O/cgroup
touch $O/ready
exec sleep 600
"""


def test_docker_machine_of_a_machinetype_with_cgroup_delegate_off_gets_no_subtree(
        paths, make_backend):
    need_v2()
    backend = make_backend(mb=256)
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    spec = undelegated(dk.make_machine(paths, backend, 22, DOCKER_OFF))
    container_id = backend.create(spec)
    d = spec.directory
    with open(d.file("joboutputs/go"), "w"):     # create() has returned: nothing more to do
        pass
    wait_ready(d)
    assert out(d, "mount") == "ro" and out(d, "cgroup") == "/"
    assert out(d, "mkdir_rc") != "0" and "ead-only" in out(d, "mkdir_err")
    pid = dk.sdk().inspect_container(container_id)["State"]["Pid"]
    top = "/sys/fs/cgroup" + cgroups.Cgroups().of_pid(pid)[cgroups.V2]
    assert not os.path.isdir(f"{top}/leaf")
    backend.destroy(spec.name, d)
    deadline = time.monotonic() + GENEROUS
    while os.path.exists(top) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not os.path.exists(top), f"{top} left behind"
