# SPDX-License-Identifier: BSD-2-Clause
"""Podman machines on cgroup v2 under systemd, rootful and rootless, as on EL9: what only the
v2 guest (scripts/ci/build-v2-guest.sh, booted by scripts/ci/run-v2-tests.sh) can prove and the
Podman tests it runs by node id (scripts/ci/v2-guest-run.sh) do not:

- rootful (podman.socket): the container's own scope, libpod-<id>.scope, made by systemd
  (Podman's systemd cgroup manager) in the machine's own slice, vac-docker-<machine dir>.slice;
  its memory, CPU and pids limits read from the cgroup files there; scope and slice gone once
  the machine is destroyed;
- rootless (podman_user = vacpodman, whose API service is socket-activated in its own,
  lingering systemd): the container's own scope in the user's systemd (user@<uid>.service),
  not the API service's cgroup; memory, CPU and pids limits applied (the user's systemd has
  those controllers delegated) and read from its cgroup files; the payload's uid on the host
  the first of vacpodman's subordinate ids; a backend made afresh (a restarted vacd) adopting
  the running machine and ending it, its scope gone; a memory hog OOM-killed and reported.

On another host (the cgroup v1 CI host) they skip, saying where they run; in the guest
(VAC_V2_GUEST=1) a host that is not systemd on cgroup v2 fails them, and under CI=true a
missing Podman fails them too.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from typing import Iterator, List

import pytest
from podman_engine import ENGINE, IMAGE, limit_within
from testbed import require_engine
from waiting import ENGINE_CALL, GENEROUS, wait_until

from vac.backends.base import MachineSpec
from vac.backends.docker import cgroupparent
from vac.backends.podman import rootless
from vac.backends.podman.backend import PodmanBackend
from vac.host import cgroups, procs
from vac.host.facts import HostFacts, user_uid
from vac.machine import mjf
from vac.machine.directory import MachineDir, MachineState, SlotRecord, write_slot_record
from vac.machine.slots import Slot, machine_name

pytestmark = [pytest.mark.podman, pytest.mark.root]

USER = "vacpodman"
UNIFIED = "/sys/fs/cgroup"
MIB = 1024 * 1024
PIDS = 123
HOST = HostFacts(fqdn="f1.example.com", processors=4, uid_of=user_uid,   # the real users
                 vg_exists=lambda name: False)
CONF = """
[settings]
vac_space = v2.example.com
factory_name = {factory}
state_dir = {state}
mb_per_processor = {mb}
{engine}
backend_timeout_seconds = {engine_call:g}

[machinetype pod]
machine_model = podman
root_image = docker://{image}
target_share = 1
docker_pids_limit = {pids}
docker_hard_cpu = true
"""
SLEEPER = "#!/bin/sh\nexec sleep 1000\n"
HOG = "#!/bin/sh\necho before-oom\nhead -c 300m /dev/zero | tail\nexit 0\n"


def require_v2_systemd(what: str) -> None:
    """Skip on another kind of host, saying where these run; fail in the v2 guest."""
    problem = ""
    if cgroups.read_hierarchy().version != 2:
        problem = "cgroup v1 here (/sys/fs/cgroup is not the unified hierarchy)"
    else:
        with open("/proc/1/comm") as f:
            comm = f.read().strip()
        problem = "" if comm == "systemd" else f"PID 1 is {comm}, not systemd"
    if not problem:
        return
    message = f"{what} on cgroup v2 with systemd: {problem}"
    if os.environ.get("VAC_V2_GUEST") == "1":
        pytest.fail(message + " (in the v2 guest: that is a failure)")
    pytest.skip(message + "; these run in the v2 guest (scripts/ci/run-v2-tests.sh)")


class World:
    """A state directory under /var/tmp (0755: vacpodman and its mapped root reach the binds),
    a factory of its own on one Podman engine, machine directories made as the factory makes
    them, and every machine made destroyed at the end."""

    def __init__(self, make_config, engine: str):
        self.state = tempfile.mkdtemp(prefix="vac-podv2-", dir="/var/tmp")
        os.chmod(self.state, 0o755)
        self.factory = f"p{uuid.uuid4().hex[:8]}.example.com"
        self.make_config = make_config
        self.engine = engine
        self.made: List[MachineSpec] = []
        self.configure(48)

    def configure(self, mb: int) -> None:
        self.cfg = self.make_config(CONF.format(engine_call=ENGINE_CALL,
            factory=self.factory, state=self.state, mb=mb, engine=self.engine, image=IMAGE,
            pids=PIDS), host_facts=HOST)
        self.cfg.settings.paths.ensure()

    def backend(self) -> PodmanBackend:
        return PodmanBackend(self.cfg.settings)

    def machine(self, ordinal: int, payload: str, processors: int = 1) -> MachineSpec:
        settings = self.cfg.settings
        mt = self.cfg.machinetypes["pod"]
        name = machine_name(settings.factory_name, ordinal)
        now = int(time.time())
        paths = settings.paths
        write_slot_record(paths, name, SlotRecord(now, mt.name, mt.machine_model))
        directory = MachineDir.create(paths, now, mt.name, name)
        mjf.write_mjf(directory, mjf.MjfContext(settings=settings, machinetype=mt,
                                                processors=processors, shutdown_time=now + 3600,
                                                now=now, job_id=None))
        directory.write("user_data", payload, mode=0o755)
        spec = MachineSpec(name=name, machinetype=mt, settings=settings,
                           slot=Slot(ordinal, name), processors=processors,
                           memory_mb=settings.mb_per_processor * processors, created=now,
                           shutdown_time=now + 3600, uuid=str(uuid.uuid4()),
                           directory=directory)
        self.made.append(spec)
        return spec

    def close(self) -> None:
        backend = self.backend()
        for spec in self.made:
            try:
                backend.destroy(spec.name, spec.directory)
            except Exception:  # noqa: BLE001 (engine gone: nothing left to clean)
                pass
        shutil.rmtree(self.state, ignore_errors=True)


def engine_world(make_config, engine: str, name: str) -> World:
    """A World on an engine that answers and runs with the systemd manager on cgroup v2."""
    require_v2_systemd(name)
    world = World(make_config, engine)
    probe = world.backend().probe()
    if not probe.available:
        world.close()
        require_engine(name, False, probe.reason)
    host = rootless.engine_info(world.backend()._client())
    assert (host.get("cgroupManager"), host.get("cgroupVersion")) == ("systemd", "v2"), host
    return world


@pytest.fixture
def rootful(make_config) -> Iterator[World]:
    world = engine_world(make_config, f"podman_url = {ENGINE}", "podman")
    yield world
    world.close()


@pytest.fixture
def rootless_world(make_config) -> Iterator[World]:
    try:
        pwd.getpwnam(USER)
    except KeyError:
        require_engine("podman-rootless", False, f"no user {USER}")
    world = engine_world(make_config, f"podman_user = {USER}", "podman-rootless")
    yield world
    world.close()


def started_pid(backend: PodmanBackend, container_id: str) -> int:
    api = backend._client()
    assert wait_until(lambda: int(api.inspect_container(container_id)["State"]["Pid"] or 0) > 0)
    return int(api.inspect_container(container_id)["State"]["Pid"])


def unit_state(unit: str) -> str:
    done = subprocess.run(["systemctl", "show", "-P", "ActiveState", unit],
                          capture_output=True, text=True, timeout=60)
    return done.stdout.strip()


def assert_own_limits(scope: str, own: str, processors: int, mb: int) -> None:
    """The machine's memory, CPU and pids limits, read from the cgroup files of its own cgroup
    (`scope`, the cgroup path of its container's scope; `own`, its first process's cgroup)."""
    top, inner = UNIFIED + scope, UNIFIED + own
    assert limit_within(top, inner, "memory.max") == mb * MIB
    assert limit_within(top, inner, "pids.max") == PIDS
    assert limit_within(top, inner, "cpu.max") == processors      # docker_hard_cpu


def shut_down(backend: PodmanBackend, spec: MachineSpec):
    assert wait_until(lambda: backend.status(spec.name, spec.directory).state
                      is MachineState.SHUTDOWN, GENEROUS), \
        f"{spec.name} did not end: {spec.directory.read('console.log')}"
    return backend.status(spec.name, spec.directory)


def test_rootful_machine_is_in_its_own_scope_in_its_own_slice_with_its_limits(rootful):
    backend = rootful.backend()
    spec = rootful.machine(1, SLEEPER, processors=2)
    container_id = backend.create(spec)
    record = spec.directory.read_backend_record()
    parent = record["cgroup_parent"]
    dir_name = os.path.basename(spec.directory.path)
    assert parent == f"vac-docker-{cgroupparent.escape(dir_name)}.slice", record
    pid = started_pid(backend, container_id)
    scope = f"{cgroupparent.slice_path(parent)}/libpod-{container_id}.scope"
    own = procs.cgroups_of(pid)[cgroups.V2]
    assert own == scope or own.startswith(scope + "/"), (own, scope)
    assert unit_state(parent) == "active"
    assert unit_state(f"libpod-{container_id}.scope") == "active"
    assert_own_limits(scope, own, processors=2, mb=2 * 48)
    backend.destroy(spec.name, spec.directory)
    assert not os.path.exists(UNIFIED + cgroupparent.slice_path(parent))
    assert unit_state(parent) in ("inactive", "")


def test_rootless_machine_is_in_its_own_scope_in_the_users_systemd_with_its_limits(
        rootless_world):
    found = rootless.resolve(USER)
    backend = rootless_world.backend()
    spec = rootless_world.machine(1, SLEEPER, processors=2)
    container_id = backend.create(spec)
    record = spec.directory.read_backend_record()
    assert record["rootless_user"] == USER and record["cgroup_parent"] == ""
    assert record["limits_applied"] == ["memory", "cpu", "pids"], record
    pid = started_pid(backend, container_id)
    own = procs.cgroups_of(pid)[cgroups.V2]
    manager = f"/user.slice/user-{found.uid}.slice/user@{found.uid}.service/"
    name = f"/libpod-{container_id}.scope"
    assert own.startswith(manager) and name in own, (own, manager)
    scope = own[:own.index(name) + len(name)]
    assert "/podman.service" not in scope, f"in the API service's cgroup: {scope}"
    assert_own_limits(scope, own, processors=2, mb=2 * 48)
    with open(f"/proc/{pid}/status") as f:
        uid = procs.parse_status_uid(f.read())
    first, count = found.subuid
    assert uid == first and first <= uid < first + count and uid not in (0, found.uid), uid
    fresh = rootless_world.backend()                 # a restarted vacd adopts it and ends it
    st = fresh.status(spec.name, spec.directory)
    assert st.state is MachineState.RUNNING and st.backend_id == container_id
    assert [m.name for m in fresh.list_machines()] == [spec.name]
    fresh.destroy(spec.name, spec.directory)
    assert wait_until(lambda: not os.path.exists(UNIFIED + scope)), scope
    assert fresh.status(spec.name, spec.directory).state is MachineState.SHUTDOWN


def test_rootless_memory_hog_is_oom_killed_and_reported(rootless_world):
    rootless_world.configure(mb=32)
    backend = rootless_world.backend()
    spec = rootless_world.machine(2, HOG)
    backend.create(spec)
    assert shut_down(backend, spec).oom_killed is True
    assert backend.collect(spec.name, spec.directory).oom_killed is True
    assert spec.directory.shutdown_message == \
        "700 Vac: container killed by the OOM killer (memory limit 32 MiB)"
    assert "before-oom" in spec.directory.read("console.log")
