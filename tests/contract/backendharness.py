# SPDX-License-Identifier: BSD-2-Clause
"""The harnesses of the Backend contract suite (test_backend_contract.py), one per backend.

A harness has two factories (self.factory, self.other_factory) configured from vac.conf text,
a state directory under /var/tmp (the Apptainer user and QEMU must reach it), and makes machines
on the real path, vac.cycle.creation.create_machine (slot record, MJF, user_data,
backend.create, started/heartbeat). Machinetype `run` keeps running (a shell loop that sleeps
and burns a little CPU) until destroyed; machinetype `exit` burns a little CPU and exits with
code 3. cleanup() destroys what both factories list, then sweeps the engine for anything left
with this run's factory names, and removes the state directories.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
import uuid
from typing import Optional

import pytest
from libvirt_env import GUEST, guest_problem

from vac.backends.base import Backend
from vac.config import load, model
from vac.cycle.creation import create_machine
from vac.errors import VacError
from vac.host.facts import HostFacts
from vac.machine.directory import MachineDir
from vac.machine.slots import Slot, machine_name, ordinal_of

DOCKER_IMAGE = "vac-test/busybox:1"
# A deadline that only ends a wait that would never end (tests/integration/waiting.py).
GENEROUS = float(os.environ.get("VAC_TEST_DEADLINE", "300"))
# The engines' API timeout (backend_timeout_seconds): generous too, as ENGINE_CALL is in
# tests/integration/waiting.py. Docker's start of a container in the cgroup v2 guest took more
# than the 20 s this harness once gave it.
ENGINE_CALL = GENEROUS
DOCKER_URL = "unix:///var/run/docker.sock"
SANDBOX = "/var/lib/vac-test/busybox-sandbox"

RUN_PAYLOAD = """#!/bin/sh
# Vac contract suite: runs until destroyed, burning a little CPU now and then.
while :; do
    i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done
    sleep 1
done
"""
EXIT_PAYLOAD = """#!/bin/sh
# Vac contract suite: burns a little CPU, then exits with code 3.
i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done
exit 3
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
    # What collect() reports as the exit code of machinetype `exit` (its payload exits with 3).
    EXIT_CODE: Optional[int] = 3
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
    EXIT_CODE = 0   # the fake runs no payload: every machine it ends exits with 0

    def new_backend(self, settings=None) -> Backend:
        from vac.backends.fake import FakeBackend

        return FakeBackend(settings or self.config.settings)

    def broken_backend(self) -> Backend:
        backend = self.new_backend()
        backend.available = False
        return backend


class DockerHarness(Harness):
    NAME = "docker"
    SETTINGS = (f"mb_per_processor = 64\ndocker_url = {DOCKER_URL}\n"
                f"backend_timeout_seconds = {ENGINE_CALL:g}")
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
    SETTINGS = (f"mb_per_processor = 64\npodman_url = {URL}\n"
                f"backend_timeout_seconds = {ENGINE_CALL:g}")
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


class PodmanRootlessHarness(PodmanHarness):
    """The rootless Podman of the user vacpodman (scripts/ci/setup-podman.sh): podman_url is
    that user's own socket, which the configuration derives from podman_user."""

    NAME = "podman-rootless"
    USER = "vacpodman"
    SETTINGS = (f"mb_per_processor = 64\npodman_user = {USER}\n"
                f"backend_timeout_seconds = {ENGINE_CALL:g}")

    def problem(self) -> str:
        import pwd

        try:
            uid = pwd.getpwnam(self.USER).pw_uid
        except KeyError:
            return f"no user {self.USER}: run scripts/ci/setup-podman.sh"
        self.URL = f"unix:///run/user/{uid}/podman/podman.sock"
        return ""


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
    EXIT_CODE = None   # a virtual machine that powers off has no exit status
    MACHINETYPE = (f"machine_model = vm-raw\nkernel = {GUEST}/vmlinuz\n"
                   f"initrd = {GUEST}/initrd.img\ncmdline = console=ttyS0 quiet no_timer_check")
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


HARNESSES = {h.NAME: h for h in (FakeHarness, DockerHarness, PodmanHarness,
                                 PodmanRootlessHarness, ApptainerHarness, LibvirtHarness)}
