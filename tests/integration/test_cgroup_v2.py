# SPDX-License-Identifier: BSD-2-Clause
"""The container backends on cgroup v2 under systemd, as on EL9.

These need a host whose /sys/fs/cgroup is the unified hierarchy, systemd as PID 1 and Docker
with the systemd cgroup driver: the guest of scripts/ci/build-v2-guest.sh, where
scripts/ci/run-v2-tests.sh runs them with VAC_V2_GUEST=1. Elsewhere (the cgroup v1 development
and CI hosts) they skip, saying so; in the guest a host that is not such a host is a failure.

For each backend: the machine's cgroup is where it should be (Docker: the container's scope in
the slice vac-docker-<machine dir>.slice that systemd made; Apptainer: <parent>/apptainer-<name>
made by Vac, with memory.max and cpu.weight), the CPU seconds Vac reports match a payload that
burns 3 CPU seconds (measured by the payload itself from /proc/self/stat), a memory hog is
OOM-killed and reported (memory.events oom_kill, the 700 message), destroy kills every process
including background sleepers that left the session, nothing of the machine is left in the
cgroup tree once it is finished, and a backend made afresh (a restarted vacd) adopts a running
machine and can still read and end it.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from typing import List

import pytest
from apptainer_env import SANDBOX, remove_cgroups, require_usable
from testbed import require_engine
from waiting import ENGINE_CALL, wait_until

from vac.backends.apptainer.backend import ApptainerBackend
from vac.backends.base import MachineSpec
from vac.backends.docker import cgroupparent
from vac.backends.docker.backend import DockerBackend
from vac.host import cgroupmachine, cgroups, procs
from vac.machine import mjf
from vac.machine.directory import MachineDir, MachineState, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name

pytestmark = [pytest.mark.root]

ENGINE = "unix:///var/run/docker.sock"
IMAGE = "vac-test/busybox:1"
UNIFIED = "/sys/fs/cgroup"
BURN_TICKS = 300          # the payload burns until its own utime + stime reach 3.00 s
BURN_SECONDS = BURN_TICKS / os.sysconf("SC_CLK_TCK")
# What else runs in the machine's cgroup besides the burning shell (runc's init, the shell's
# start, apptainer's starter: up to 2.3 s under TCG on a loaded host) is measured with an idle
# machine first; the burning one may cost that twice over plus this, never less than the burn.
BURN_SLACK = 0.5

# Burns CPU in the shell itself (no forks): reads its own /proc/<pid>/stat until utime + stime
# (fields 14 and 15, in clock ticks) reach the target, then says so and waits or ends.
BURN = """#!/bin/sh
while :; do
  read -r line < /proc/$$/stat
  set -- $line
  [ $(( ${14} + ${15} )) -ge %d ] && break
done
echo $(( ${14} + ${15} )) > %s/burnt
%s
"""
SLEEPERS = "sleep 1001 & sleep 1002 & (setsid sleep 1003 &) ; (sleep 1004 &) ; " \
           "touch %s/up; sleep 1000\n"
HOG = "#!/bin/sh\necho before-oom\nhead -c 300m /dev/zero | tail\nexit 0\n"

CONF = """
[settings]
vac_space = v2.example.com
factory_name = {factory}
state_dir = {state}
mb_per_processor = {mb}
docker_url = {url}
backend_timeout_seconds = {engine_call:g}
singularity_user = vacsngly

[machinetype dock]
machine_model = docker
root_image = docker://{image}
target_share = 1

[machinetype app]
machine_model = apptainer
target_share = 1
root_image = {sandbox}
user_data = /dev/null
container_command = /bin/sh /user_data
"""


# Where we are -----------------------------------------------------------------------------

def host_problem() -> str:
    """Why this host is not cgroup v2 under systemd ('' if it is)."""
    if cgroups.read_hierarchy().version != 2:
        return "cgroup v1 here (/sys/fs/cgroup is not the unified hierarchy)"
    comm = (open("/proc/1/comm").read().strip() if os.path.exists("/proc/1/comm") else "?")
    if comm != "systemd":
        return f"PID 1 is {comm}, not systemd"
    return ""


def require_v2(what: str, problem: str = "") -> None:
    """Skip on another kind of host, saying where these run; fail in the v2 guest."""
    problem = problem or host_problem()
    if not problem:
        return
    message = f"{what} on cgroup v2 with systemd: {problem}"
    if os.environ.get("VAC_V2_GUEST") == "1":
        pytest.fail(message + " (in the v2 guest: that is a failure)")
    pytest.skip(message + "; these run in the v2 guest (scripts/ci/run-v2-tests.sh)")


def pids_at(cgroup_dir: str) -> List[int]:
    """Every pid in a cgroup directory and the cgroups below it."""
    found: List[int] = []
    for top, _, _ in os.walk(cgroup_dir):
        try:
            with open(os.path.join(top, "cgroup.procs")) as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    info = procs.read(pid)
    return info is not None and info.alive


def flat(path: str) -> dict:
    with open(path) as f:
        return cgroups.parse_flat_keyed(f.read())


class World:
    """A state directory under /var/tmp (vacsngly must enter it), a config with both
    machinetypes, and machine directories made as the factory makes them."""

    def __init__(self, make_config, mb: int = 256):
        self.state = tempfile.mkdtemp(prefix="vac-v2-", dir="/var/tmp")
        os.chmod(self.state, 0o755)
        self.tag = uuid.uuid4().hex[:8]
        self.factory = f"v{self.tag}.example.com"
        self.parent = f"vac-test-{self.tag}"
        self.make_config = make_config
        self.configure(mb)

    def configure(self, mb: int) -> None:
        self.cfg = self.make_config(CONF.format(engine_call=ENGINE_CALL,
            factory=self.factory, state=self.state, mb=mb, url=ENGINE, image=IMAGE,
            sandbox=SANDBOX))
        self.paths = self.cfg.settings.paths
        self.paths.ensure()

    def machine(self, machinetype: str, ordinal: int, payload: str) -> MachineSpec:
        settings = self.cfg.settings
        mt = self.cfg.machinetypes[machinetype]
        name = machine_name(settings.factory_name, ordinal)
        now = int(time.time())
        write_slot_record(self.paths, name, SlotRecord(now, mt.name, mt.machine_model))
        directory = MachineDir.create(self.paths, now, mt.name, name)
        mjf.write_mjf(directory, mjf.MjfContext(settings=settings, machinetype=mt, processors=1,
                                                shutdown_time=now + 3600, now=now, job_id=None))
        directory.write("user_data", payload, mode=0o755)
        return MachineSpec(name=name, machinetype=mt, settings=settings, slot=Slot(ordinal, name),
                           processors=1, memory_mb=settings.mb_per_processor, created=now,
                           shutdown_time=now + 3600, uuid=str(uuid.uuid4()),
                           directory=directory)

    def docker(self) -> DockerBackend:
        return DockerBackend(self.cfg.settings)

    def apptainer(self) -> ApptainerBackend:
        return ApptainerBackend(self.cfg.settings, cgroup_parent=self.parent)


def console(spec: MachineSpec) -> str:
    return (spec.directory.read("console.log") or "")[-2000:]


def shut_down(backend, spec: MachineSpec, timeout: float = 120):
    assert wait_until(lambda: backend.status(spec.name, spec.directory).state
                      is MachineState.SHUTDOWN, timeout), \
        f"{spec.name} did not end: {backend.status(spec.name, spec.directory)} {console(spec)}"
    return backend.status(spec.name, spec.directory)


def idle_cpu(world: World, backend, machinetype: str, ordinal: int) -> float:
    """CPU seconds of a machine whose payload does nothing: what the engine's own start costs
    inside the machine's cgroup."""
    spec = world.machine(machinetype, ordinal, "#!/bin/sh\nexit 0\n")
    backend.create(spec)
    try:
        return backend.collect(spec.name, spec.directory).cpu_seconds \
            if shut_down(backend, spec) else 0.0
    finally:
        backend.destroy(spec.name, spec.directory)


def burnt_ticks(spec: MachineSpec) -> int:
    text = spec.directory.read("joboutputs/burnt")
    assert text, f"the payload wrote no joboutputs/burnt; console: {console(spec)}"
    return int(text.strip())


# Docker with the systemd cgroup driver ----------------------------------------------------

@pytest.fixture
def world(make_config):
    w = World(make_config)
    yield w
    shutil.rmtree(w.state, ignore_errors=True)


@pytest.fixture
def dock(world):
    require_v2("Docker")
    backend = world.docker()
    probe = backend.probe()
    require_engine("docker", probe.available, probe.reason)
    info = backend._client().info()
    require_v2("Docker", "" if info.get("CgroupDriver") == "systemd" and
               str(info.get("CgroupVersion")) == "2" else
               f"Docker reports cgroup driver {info.get('CgroupDriver')!r}, "
               f"cgroup version {info.get('CgroupVersion')!r}")
    made: List[MachineSpec] = []
    yield backend, made
    for spec in made:
        backend.destroy(spec.name, spec.directory)


def slice_dir(spec: MachineSpec) -> str:
    parent = spec.directory.read_backend_record()["cgroup_parent"]
    return UNIFIED + cgroupparent.slice_path(parent)


def slice_state(name: str) -> str:
    import subprocess
    done = subprocess.run(["systemctl", "show", "-P", "ActiveState", name],
                          capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


def test_docker_container_is_in_a_slice_of_its_own_that_systemd_made(world, dock):
    backend, made = dock
    spec = world.machine("dock", 1, "#!/bin/sh\n" + SLEEPERS % "/var/spool/joboutputs")
    made.append(spec)
    container_id = backend.create(spec)
    record = spec.directory.read_backend_record()
    dir_name = os.path.basename(spec.directory.path)
    expected = "vac-docker-" + cgroupparent.escape(dir_name) + ".slice"
    assert record["cgroup_driver"] == "systemd" and record["cgroup_parent"] == expected
    attrs = backend._client().inspect_container(container_id)
    assert attrs["HostConfig"]["CgroupParent"] == expected
    pid = int(attrs["State"]["Pid"])
    path = f"/vac.slice/vac-docker.slice/{expected}/docker-{container_id}.scope"
    # its processes in the leaf of the cgroup delegated to it
    assert procs.cgroups_of(pid)[cgroups.V2] == path + "/leaf"
    assert slice_state(expected) == "active"
    scope = UNIFIED + path
    with open(os.path.join(scope, "memory.max")) as f:
        assert int(f.read()) == 256 * 1024 * 1024
    with open(os.path.join(scope, "pids.max")) as f:
        assert f.read().strip() == str(spec.machinetype.docker_pids_limit)


def test_docker_cpu_seconds_match_what_the_payload_burnt(world, dock):
    backend, made = dock
    spec = world.machine("dock", 2, BURN % (BURN_TICKS, "/var/spool/joboutputs", "exit 0"))
    made.append(spec)
    backend.create(spec)
    st = shut_down(backend, spec)
    burnt = burnt_ticks(spec) / os.sysconf("SC_CLK_TCK")
    assert burnt >= BURN_SECONDS
    # The container's scope is gone; the slice still holds its CPU time.
    assert os.path.isdir(slice_dir(spec))
    overhead = idle_cpu(world, backend, "dock", 7)
    assert burnt - 0.05 <= st.cpu_seconds <= burnt + 2 * overhead + BURN_SLACK, \
        (burnt, overhead, st)
    final = backend.collect(spec.name, spec.directory)
    assert final.cpu_seconds == pytest.approx(st.cpu_seconds, abs=0.01)
    assert spec.directory.read_backend_record()["cpu_seconds"] == \
        pytest.approx(final.cpu_seconds, abs=0.001)


def test_docker_memory_hog_is_oom_killed_and_reported(world, dock):
    world.configure(mb=32)
    spec = world.machine("dock", 3, HOG)
    backend = world.docker()
    try:
        backend.create(spec)
        st = shut_down(backend, spec)
        assert st.oom_killed is True
        assert flat(os.path.join(slice_dir(spec), "memory.events"))["oom_kill"] >= 1
        backend.collect(spec.name, spec.directory)
        assert spec.directory.shutdown_message == \
            "700 Vac: container killed by the OOM killer (memory limit 32 MiB)"
    finally:
        backend.destroy(spec.name, spec.directory)
    assert not os.path.exists(slice_dir(spec))


def test_docker_destroy_kills_every_process_and_leaves_no_cgroup(world, dock):
    backend, made = dock
    spec = world.machine("dock", 4, "#!/bin/sh\n" + SLEEPERS % "/var/spool/joboutputs")
    made.append(spec)
    backend.create(spec)
    assert wait_until(lambda: os.path.exists(spec.directory.file("joboutputs/up")))
    top = slice_dir(spec)
    assert wait_until(lambda: len(pids_at(top)) >= 6), pids_at(top)
    pids = pids_at(top)
    name = spec.directory.read_backend_record()["cgroup_parent"]
    backend.destroy(spec.name, spec.directory)
    assert wait_until(lambda: not any(alive(p) for p in pids)), \
        [p for p in pids if alive(p)]
    assert not os.path.exists(top)
    assert slice_state(name) in ("inactive", "")
    assert backend.status(spec.name, spec.directory).state is MachineState.SHUTDOWN


def test_docker_finished_machine_leaves_nothing_in_the_cgroup_tree(world, dock):
    backend, made = dock
    spec = world.machine("dock", 5, "#!/bin/sh\necho '200 done' > $JOBOUTPUTS/shutdown_message\n")
    backend.create(spec)
    shut_down(backend, spec)
    backend.collect(spec.name, spec.directory)
    backend.destroy(spec.name, spec.directory)
    dir_name = cgroupparent.escape(os.path.basename(spec.directory.path))
    left = [top for top, _, _ in os.walk(UNIFIED) if dir_name in top]
    assert left == []
    assert not backend.release(spec.directory)   # nothing for a later cycle either


def test_docker_a_fresh_backend_adopts_reads_and_ends_a_running_machine(world, dock):
    backend, made = dock
    spec = world.machine("dock", 6, BURN % (BURN_TICKS // 3, "/var/spool/joboutputs",
                                            "sleep 1000"))
    made.append(spec)
    container_id = backend.create(spec)
    assert wait_until(lambda: os.path.exists(spec.directory.file("joboutputs/burnt")))
    fresh = world.docker()                       # a restarted vacd
    st = fresh.status(spec.name, spec.directory)
    assert st.state is MachineState.RUNNING and st.backend_id == container_id
    assert st.cpu_seconds >= burnt_ticks(spec) / os.sysconf("SC_CLK_TCK") - 0.05
    assert [m.name for m in fresh.list_machines()] == [spec.name]
    top = slice_dir(spec)
    fresh.destroy(spec.name, spec.directory)
    assert not os.path.exists(top)


# Apptainer: Vac's own cgroup per machine --------------------------------------------------

@pytest.fixture
def app(world):
    require_v2("Apptainer")
    backend = world.apptainer()
    require_usable(backend)
    assert backend.hierarchy.version == 2
    yield backend
    remove_cgroups(backend.hierarchy, world.parent, [backend])


def app_dir(world, spec: MachineSpec) -> str:
    return os.path.join(UNIFIED, world.parent, f"apptainer-{spec.name}")


def test_apptainer_machine_is_in_its_own_v2_cgroup_with_limits(world, app):
    spec = world.machine("app", 1, "#!/bin/sh\n" + SLEEPERS % "/tmp/joboutputs")
    app.create(spec)
    assert wait_until(lambda: os.path.exists(spec.directory.file("joboutputs/up")))
    d = app_dir(world, spec)
    with open(os.path.join(d, "memory.max")) as f:
        assert int(f.read()) == 256 * 1024 * 1024
    with open(os.path.join(d, "cpu.weight")) as f:
        assert int(f.read()) == cgroups.cpu_weight(1)
    pids = pids_at(d)
    assert len(pids) >= 6
    for pid in pids:
        assert procs.cgroups_of(pid)[cgroups.V2].startswith(f"/{world.parent}/apptainer-")
    app.destroy(spec.name, spec.directory)


def test_apptainer_cpu_seconds_match_what_the_payload_burnt(world, app):
    spec = world.machine("app", 2, BURN % (BURN_TICKS, "/tmp/joboutputs", "exit 0"))
    app.create(spec)
    st = shut_down(app, spec)
    burnt = burnt_ticks(spec) / os.sysconf("SC_CLK_TCK")
    assert burnt >= BURN_SECONDS
    final = app.collect(spec.name, spec.directory)
    overhead = idle_cpu(world, app, "app", 7)
    assert burnt - 0.05 <= final.cpu_seconds <= burnt + 2 * overhead + BURN_SLACK, \
        (burnt, overhead, st, final)
    app.destroy(spec.name, spec.directory)
    after = app.status(spec.name, spec.directory)
    assert after.cpu_seconds == pytest.approx(final.cpu_seconds, abs=0.01)  # remembered
    assert not os.path.exists(app_dir(world, spec))


def test_apptainer_memory_hog_is_oom_killed_and_reported(world, app):
    # Apptainer's starter is in the machine's cgroup too (about 26 MB resident here): with a
    # limit near that, the hog may not stand out or the cgroup thrashes on the starter's pages.
    world.configure(mb=128)
    backend = world.apptainer()
    require_usable(backend)
    spec = world.machine("app", 3, HOG)
    try:
        backend.create(spec)
        d = app_dir(world, spec)
        st = shut_down(backend, spec)
        assert st.oom_killed
        assert flat(os.path.join(d, "memory.events"))["oom_kill"] >= 1
        backend.collect(spec.name, spec.directory)
        assert spec.directory.shutdown_message == \
            "700 Vac: container killed by the OOM killer (memory limit 128 MiB)"
        backend.destroy(spec.name, spec.directory)
        assert not os.path.exists(d)
    finally:
        remove_cgroups(backend.hierarchy, world.parent, [backend])


def test_apptainer_destroy_kills_every_process_and_leaves_no_cgroup(world, app):
    spec = world.machine("app", 4, "#!/bin/sh\n" + SLEEPERS % "/tmp/joboutputs")
    app.create(spec)
    assert wait_until(lambda: os.path.exists(spec.directory.file("joboutputs/up")))
    d = app_dir(world, spec)
    assert wait_until(lambda: len(pids_at(d)) >= 6)
    pids = pids_at(d)
    app.destroy(spec.name, spec.directory)
    assert not any(alive(p) for p in pids), [p for p in pids if alive(p)]
    assert not os.path.exists(d)
    assert cgroupmachine.list_children(app.hierarchy, ("apptainer-",), world.parent) == []


def test_apptainer_a_fresh_backend_adopts_reads_and_ends_a_running_machine(world, app):
    spec = world.machine("app", 5, BURN % (BURN_TICKS // 3, "/tmp/joboutputs", "sleep 1000"))
    job_id = app.create(spec)
    assert wait_until(lambda: os.path.exists(spec.directory.file("joboutputs/burnt")))
    fresh = world.apptainer()                    # a restarted vacd: not the parent
    st = fresh.status(spec.name, spec.directory)
    assert st.state is MachineState.RUNNING and st.backend_id == job_id
    assert st.cpu_seconds >= burnt_ticks(spec) / os.sysconf("SC_CLK_TCK") - 0.05
    pids = pids_at(app_dir(world, spec))
    fresh.destroy(spec.name, spec.directory)
    assert not any(alive(p) for p in pids)
    assert not os.path.exists(app_dir(world, spec))
    assert fresh.status(spec.name, spec.directory).state is MachineState.SHUTDOWN
