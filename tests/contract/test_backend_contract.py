# SPDX-License-Identifier: BSD-2-Clause
"""The Backend contract (vac/backends/base.py), checked on every backend by one suite.

Each backend has a harness: two factories (this one and a second factory name) configured
from vac.conf text, a state directory under /var/tmp (the Apptainer user and QEMU must reach
it), and machines created on the real path, vac.cycle.creation.create_machine (slot record, MJF,
user_data, backend.create, started/heartbeat). Machinetype `run` keeps running (a shell loop
that sleeps and burns a little CPU) until destroyed; machinetype `exit` exits at once.

fake always runs; docker, podman, apptainer and libvirt need their engine (require_engine: a missing
engine is a failure under CI=true). One running machine per backend is shared by the
read-only checks (module scope: a libvirt guest costs seconds); every other check makes and
destroys its own. Teardown destroys what both factories list, then sweeps the engine for
anything left with this run's factory names, and removes the state directories.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from typing import Callable, Optional

import pytest
from conftest import require_engine
from libvirt_env import GUEST, guest_problem

from vac.backends.base import Backend, MachineStatus, Probe
from vac.config import load, model
from vac.cycle.creation import create_machine
from vac.errors import VacError
from vac.host.facts import HostFacts
from vac.machine.directory import MachineDir, MachineState
from vac.machine.slots import Slot, machine_name, ordinal_of

DOCKER_IMAGE = "vac-test/busybox:1"
# A deadline that only ends a wait that would never end (tests/integration/waiting.py).
GENEROUS = float(os.environ.get("VAC_TEST_DEADLINE", "300"))
DOCKER_URL = "unix:///var/run/docker.sock"
SANDBOX = "/var/lib/vac-test/busybox-sandbox"

# Slot ordinals of this suite: above the integration tests' (VNC port 5900 + ordinal).
RUNNING, OTHER, DESTROYED, TWICE, NEVER, NO_BACKEND, EXITING = 81, 82, 83, 84, 85, 86, 87

RUN_PAYLOAD = """#!/bin/sh
# Vac contract suite: runs until destroyed, burning a little CPU now and then.
while :; do
    i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
    sleep 1
done
"""
EXIT_PAYLOAD = """#!/bin/sh
# Vac contract suite: exits at once.
exit 0
"""

CONF = """
[settings]
vac_space = contract.example.com
factory_name = {factory}
state_dir = {state}
{settings}

[machinetype run]
target_share = 1
user_data = {top}/run.sh
{machinetype}
{run}

[machinetype exit]
target_share = 1
user_data = {top}/exit.sh
{machinetype}
{exit}
"""


@dataclasses.dataclass(frozen=True)
class Made:
    """A machine created through vac.cycle.creation: its name, directory and backend id."""

    name: str
    directory: MachineDir
    backend_id: str


class Harness:
    """Two factories (self.factory, self.other_factory) over one engine, and their machines."""

    NAME = ""
    SETTINGS = ""
    MACHINETYPE = ""
    RUN = ""
    EXIT = ""
    finish_timeout = GENEROUS

    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:8]
        self.factory = f"ct{self.tag}.example.com"
        self.other_factory = f"co{self.tag}.example.com"
        self.top = tempfile.mkdtemp(prefix=f"vac-contract-{self.NAME}-", dir="/var/tmp")
        os.chmod(self.top, 0o755)
        for name, text in (("run.sh", RUN_PAYLOAD), ("exit.sh", EXIT_PAYLOAD)):
            with open(os.path.join(self.top, name), "w") as f:
                f.write(text)
        self.config: Optional[model.Config] = None
        self.other_config: Optional[model.Config] = None
        self.backend: Optional[Backend] = None
        self.other_backend: Optional[Backend] = None

    # Set up --------------------------------------------------------------------------------

    def problem(self) -> str:
        """Why this host cannot run the backend's machines ("" if it can)."""
        return ""

    def build(self) -> None:
        self.config = self._config(self.factory, "state")
        self.other_config = self._config(self.other_factory, "other-state")
        self.backend = self.new_backend()
        self.other_backend = self.new_backend(self.other_config.settings)

    def _config(self, factory: str, state: str) -> model.Config:
        state_dir = os.path.join(self.top, state)
        path = os.path.join(self.top, f"{state}.conf")
        with open(path, "w") as f:
            f.write(CONF.format(factory=factory, state=state_dir, top=self.top,
                                settings=self.SETTINGS, machinetype=self.MACHINETYPE,
                                run=self.RUN, exit=self.EXIT))
        host = HostFacts(fqdn=factory, processors=4, vg_exists=lambda _name: False)
        built = load.build(load.read_raw([path]), host)
        built.settings.paths.ensure()
        return built

    def new_backend(self, settings=None) -> Backend:
        """A new backend instance (as a restarted vacd makes) over this factory's state."""
        raise NotImplementedError

    def broken_backend(self) -> Backend:
        """A backend whose engine cannot be reached or used."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Engine-side preconditions, after a successful probe."""

    # Machines ------------------------------------------------------------------------------

    def make(self, kind: str, ordinal: int, other: bool = False) -> Made:
        """Create a machine of machinetype `kind` in slot `ordinal`, as the factory does."""
        cfg = self.other_config if other else self.config
        backend = self.other_backend if other else self.backend
        name = machine_name(cfg.settings.factory_name, ordinal)
        now = time.time()
        created = create_machine(cfg.settings, cfg.machinetypes[kind], Slot(ordinal, name),
                                 1, int(now) + 3600, backend, now)
        return Made(name, created.directory, created.backend_id)

    # Clean up ------------------------------------------------------------------------------

    def cleanup(self) -> None:
        for backend in (self.backend, self.other_backend):
            if backend is None:
                continue
            try:
                for status in backend.list_machines():
                    backend.destroy(status.name, None)
            except VacError:
                pass
        try:
            self.sweep()
        finally:
            shutil.rmtree(self.top, ignore_errors=True)

    def sweep(self) -> None:
        """Remove from the engine anything of this run's factories that is still there."""

    def ours(self, name: str) -> bool:
        return ordinal_of(self.factory, name) >= 0 or ordinal_of(self.other_factory, name) >= 0


class FakeHarness(Harness):
    NAME = "fake"
    SETTINGS = "enable_fake_backend = true"
    MACHINETYPE = "machine_model = fake"
    RUN = "fake_run_seconds = 3600"
    EXIT = "fake_run_seconds = 0.5\nfake_shutdown_message = 200 Intended work completed ok"

    def new_backend(self, settings=None) -> Backend:
        from vac.backends.fake import FakeBackend

        return FakeBackend(settings or self.config.settings)

    def broken_backend(self) -> Backend:
        backend = self.new_backend()
        backend.available = False
        return backend


class DockerHarness(Harness):
    NAME = "docker"
    SETTINGS = f"mb_per_processor = 64\ndocker_url = {DOCKER_URL}\nbackend_timeout_seconds = 20"
    MACHINETYPE = f"machine_model = docker\nroot_image = docker://{DOCKER_IMAGE}"

    def new_backend(self, settings=None) -> Backend:
        from vac.backends.docker.backend import DockerBackend

        return DockerBackend(settings or self.config.settings)

    def broken_backend(self) -> Backend:
        return self.new_backend(dataclasses.replace(
            self.config.settings, docker_url="unix:///nonexistent/vac-contract/docker.sock"))

    def prepare(self) -> None:
        self._prepare(DOCKER_URL, "setup-docker.sh")

    def _prepare(self, url: str, setup: str) -> None:
        import docker

        api = docker.APIClient(base_url=url, timeout=30)
        try:
            api.inspect_image(DOCKER_IMAGE)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {DOCKER_IMAGE} missing: run scripts/ci/{setup}")
        finally:
            api.close()

    def sweep(self) -> None:
        self._sweep(DOCKER_URL)

    def _sweep(self, url: str) -> None:
        import docker

        api = docker.APIClient(base_url=url, timeout=30)
        try:
            for factory in (self.factory, self.other_factory):
                for c in api.containers(all=True, filters={"label": f"vac.factory={factory}"}):
                    api.remove_container(c["Id"], force=True, v=True)
        except Exception:  # noqa: BLE001 (engine gone: nothing left to clean)
            pass
        finally:
            api.close()


class PodmanHarness(DockerHarness):
    """The rootful Podman of scripts/ci/setup-podman.sh, through its Docker-compatible API."""

    NAME = "podman"
    URL = "unix:///run/podman/podman.sock"
    SETTINGS = f"mb_per_processor = 64\npodman_url = {URL}\nbackend_timeout_seconds = 20"
    MACHINETYPE = f"machine_model = podman\nroot_image = docker://{DOCKER_IMAGE}"

    def new_backend(self, settings=None) -> Backend:
        from vac.backends.podman.backend import PodmanBackend

        return PodmanBackend(settings or self.config.settings)

    def broken_backend(self) -> Backend:
        return self.new_backend(dataclasses.replace(
            self.config.settings, podman_url="unix:///nonexistent/vac-contract/podman.sock"))

    def prepare(self) -> None:
        self._prepare(self.URL, "setup-podman.sh")

    def sweep(self) -> None:
        self._sweep(self.URL)


class ApptainerHarness(Harness):
    NAME = "apptainer"
    SETTINGS = "singularity_user = vacsngly\nmb_per_processor = 2048"
    MACHINETYPE = (f"machine_model = apptainer\nroot_image = {SANDBOX}\n"
                   "container_command = /bin/sh /user_data")

    def __init__(self) -> None:
        super().__init__()
        self.parent = f"vac-test-{self.tag}"   # both factories share it, as they share "vac"

    def problem(self) -> str:
        if os.geteuid() != 0:
            return "the Apptainer backend runs as root"
        if not os.path.isdir(SANDBOX):
            return f"no sandbox image {SANDBOX}: run scripts/ci/setup-apptainer.sh"
        return ""

    def new_backend(self, settings=None) -> Backend:
        from vac.backends.apptainer.backend import ApptainerBackend

        return ApptainerBackend(settings or self.config.settings, cgroup_parent=self.parent)

    def broken_backend(self) -> Backend:
        return self.new_backend(dataclasses.replace(
            self.config.settings, singularity_path="/nonexistent/vac-contract/apptainer"))

    def sweep(self) -> None:
        from vac.host import cgroupmachine

        if self.backend is None:
            return
        hierarchy = self.backend.hierarchy
        for child in cgroupmachine.list_children(hierarchy, ("",), self.parent):
            cgroup = cgroupmachine.MachineCgroup(hierarchy, child, self.parent)
            cgroup.kill()
            cgroup.remove()
        for root in set(hierarchy.mounts.values()):
            try:
                os.rmdir(os.path.join(root, self.parent))
            except FileNotFoundError:
                pass


class LibvirtHarness(Harness):
    NAME = "libvirt"
    SETTINGS = ("mb_per_processor = 256\nlibvirt_virt_type = auto\n"
                "libvirt_shutdown_wait_seconds = 1")
    MACHINETYPE = (f"machine_model = vm-raw\nkernel = {GUEST}/vmlinuz\n"
                   f"initrd = {GUEST}/initrd.img\ncmdline = console=ttyS0 quiet")
    finish_timeout = GENEROUS

    def problem(self) -> str:
        return guest_problem()

    def new_backend(self, settings=None) -> Backend:
        from vac.backends.libvirt.backend import LibvirtBackend

        return LibvirtBackend(settings or self.config.settings)

    def broken_backend(self) -> Backend:
        from vac.backends.libvirt.backend import LibvirtBackend

        settings = dataclasses.replace(
            self.config.settings, libvirt_uri="qemu+unix:///system?socket=/nonexistent/vac-sock")
        return LibvirtBackend(settings, connect_timeout=5)

    def prepare(self) -> None:
        """Make the vac network only if it is missing: prepare_host() renames its DHCP hosts
        after our factory, under the feet of other tests using the shared network."""
        import libvirt

        from vac.backends.libvirt import network as vmnetwork

        conn = libvirt.open(self.config.settings.libvirt_uri)
        try:
            active = conn.networkLookupByName(vmnetwork.NETWORK_NAME).isActive()
        except libvirt.libvirtError:
            active = False
        finally:
            conn.close()
        if not active:
            self.backend.prepare_host()

    def sweep(self) -> None:
        import libvirt

        conn = libvirt.open(self.config.settings.libvirt_uri)
        try:
            for dom in conn.listAllDomains(0):
                if self.ours(dom.name()):
                    try:
                        dom.destroy()
                    except libvirt.libvirtError:
                        pass
        finally:
            conn.close()


HARNESSES = {h.NAME: h for h in (FakeHarness, DockerHarness, PodmanHarness, ApptainerHarness,
                                 LibvirtHarness)}
BACKENDS = [pytest.param("fake", id="fake"),
            pytest.param("docker", id="docker", marks=pytest.mark.docker),
            pytest.param("podman", id="podman", marks=pytest.mark.podman),
            pytest.param("apptainer", id="apptainer",
                         marks=[pytest.mark.apptainer, pytest.mark.root]),
            pytest.param("libvirt", id="libvirt", marks=pytest.mark.libvirt)]


@pytest.fixture(scope="module", params=BACKENDS)
def harness(request):
    h = HARNESSES[request.param]()
    try:
        problem = h.problem()
        require_engine(h.NAME, not problem, problem)
        h.build()
        probe = h.backend.probe()
        require_engine(h.NAME, probe.available, probe.reason)
        h.prepare()
        yield h
    finally:
        h.cleanup()


@pytest.fixture(scope="module")
def running(harness):
    """One machine of this factory, running for the read-only checks."""
    made = harness.make("run", RUNNING)
    yield made
    harness.backend.destroy(made.name, made.directory)


def wait_for(backend: Backend, made: Made, done: Callable[[MachineState], bool],
             timeout: float) -> MachineStatus:
    """Poll status() until done(state) or the timeout; return the last status."""
    deadline = time.monotonic() + timeout
    while True:
        status = backend.status(made.name, made.directory)
        if done(status.state) or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def settled(backend: Backend, made: Made) -> MachineStatus:
    """The status once the machine is past STARTING."""
    return wait_for(backend, made, lambda s: s is not MachineState.STARTING, GENEROUS)


def listed(backend: Backend) -> dict:
    return {status.name: status for status in backend.list_machines()}


# The checks ---------------------------------------------------------------------------------

def test_probe_returns_a_probe_and_never_raises(harness):
    """The broken engine's probe ends within 3 times what the working one's takes here now
    (10 s at least), not at an engine timeout."""
    started = time.monotonic()
    probe = harness.backend.probe()
    working = time.monotonic() - started
    assert isinstance(probe, Probe) and probe.available, probe
    assert isinstance(probe.version, str) and probe.version
    started = time.monotonic()
    broken = harness.broken_backend().probe()
    took = time.monotonic() - started
    assert isinstance(broken, Probe)
    assert not broken.available and broken.reason, broken
    assert took < max(10.0, 3 * working), (took, working)


def test_create_then_running_with_the_id_list_machines_reports(harness, running):
    assert running.backend_id
    status = settled(harness.backend, running)
    assert status.name == running.name
    assert status.state is MachineState.RUNNING, status
    machines = listed(harness.backend)
    assert running.name in machines, sorted(machines)
    assert machines[running.name].backend_id == running.backend_id


def test_list_machines_shows_only_this_factorys_machines(harness, running):
    other = harness.make("run", OTHER, other=True)
    try:
        assert settled(harness.other_backend, other).state is MachineState.RUNNING
        ours = listed(harness.backend)
        assert running.name in ours
        assert other.name not in ours, f"{harness.factory} lists {other.name}"
        assert all(ordinal_of(harness.factory, name) >= 0 for name in ours), sorted(ours)
        theirs = listed(harness.other_backend)
        assert other.name in theirs and running.name not in theirs, sorted(theirs)
    finally:
        harness.other_backend.destroy(other.name, other.directory)


def test_cpu_seconds_never_decrease(harness, running):
    seen = []
    for _ in range(5):
        seen.append(harness.backend.status(running.name, running.directory).cpu_seconds)
        time.sleep(0.3)
    assert seen[0] >= 0
    assert all(later >= earlier for earlier, later in zip(seen, seen[1:])), seen


def test_a_new_backend_instance_adopts_the_running_machine(harness, running):
    fresh = harness.new_backend()
    for directory in (running.directory, None):
        status = fresh.status(running.name, directory)
        assert status.state is MachineState.RUNNING, (directory, status)
        assert status.backend_id == running.backend_id, (directory, status)
    machines = listed(fresh)
    assert running.name in machines and machines[running.name].backend_id == running.backend_id


def test_destroy_then_shutdown(harness):
    made = harness.make("run", DESTROYED)
    try:
        assert settled(harness.backend, made).state is MachineState.RUNNING
        harness.backend.destroy(made.name, made.directory)
        assert harness.backend.status(made.name, made.directory).state is MachineState.SHUTDOWN
        assert harness.backend.status(made.name, None).state is MachineState.SHUTDOWN
        assert made.name not in listed(harness.backend)
    finally:
        harness.backend.destroy(made.name, made.directory)


def test_destroy_twice_and_destroy_of_a_never_created_machine_are_fine(harness):
    made = harness.make("run", TWICE)
    harness.backend.destroy(made.name, made.directory)
    harness.backend.destroy(made.name, made.directory)
    harness.backend.destroy(made.name, None)
    assert harness.backend.status(made.name, made.directory).state is MachineState.SHUTDOWN
    never = machine_name(harness.factory, NEVER)
    harness.backend.destroy(never, None)
    assert harness.backend.status(never, None).state is MachineState.SHUTDOWN
    # A directory whose creation stopped before backend.create (no backend record).
    name = machine_name(harness.factory, NO_BACKEND)
    directory = MachineDir.create(harness.config.settings.paths, int(time.time()), "run", name)
    harness.backend.destroy(name, directory)
    assert harness.backend.status(name, directory).state is MachineState.SHUTDOWN
    assert not {made.name, never, name} & set(listed(harness.backend))


def test_a_payload_that_exits_is_shutdown_and_collected(harness):
    made = harness.make("exit", EXITING)
    try:
        status = wait_for(harness.backend, made, lambda s: s is MachineState.SHUTDOWN,
                          harness.finish_timeout)
        assert status.state is MachineState.SHUTDOWN, status
        final = harness.backend.collect(made.name, made.directory)
        assert isinstance(final, MachineStatus)
        assert final.name == made.name and final.state is MachineState.SHUTDOWN, final
        assert final.exit_code in (None, 0), final
        assert final.cpu_seconds >= 0
    finally:
        harness.backend.destroy(made.name, made.directory)
