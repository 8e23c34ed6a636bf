# SPDX-License-Identifier: BSD-2-Clause
"""Fixtures shared by the integration test modules (plain helpers live in the modules beside
this file, each named for its job: docker_engine, dockerfactory, waiting, ...).

Test modules import their helpers from those modules, never from another test module and never
from "conftest" (tests/testbed.py has REPO and require_engine).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from typing import List

import pytest
from apptainer_env import require_root, require_usable
from apptainer_space import Space
from docker_backend_env import config_text, remove_ours
from libvirtfactory import LibvirtFactory, engine_problem
from testbed import require_engine

from vac.backends.docker.backend import DockerBackend
from vac.host import cgroupmachine


# DockerBackend on the real engine ---------------------------------------------------------

@pytest.fixture(scope="module")
def docker_backend_cleanup():
    """At the end of each module that uses it: remove every container of the DockerBackend
    tests' factory (docker_backend_env.FACTORY) that is left."""
    yield
    try:
        remove_ours()
    except Exception:  # engine gone: nothing we can clean
        pass


@pytest.fixture
def make_backend(make_config, docker_backend_cleanup):
    made: List[DockerBackend] = []

    def make(**kw) -> DockerBackend:
        config = make_config(config_text(**kw))
        backend = DockerBackend(config.settings)
        backend.config = config
        made.append(backend)
        return backend

    yield make
    live = made[0] if made else None
    if live is not None and live.probe().available:
        for m in DockerBackend(live.settings).list_machines():
            DockerBackend(live.settings).destroy(m.name, None)
        remove_ours()


# Apptainer machines of real vacd processes --------------------------------------------------

@pytest.fixture
def space():
    """An Apptainer factory for real vacd processes (apptainer_space.Space); its machines'
    cgroups and state directory are removed afterwards."""
    require_root()
    s = Space()
    backend = s.backend()
    require_usable(backend)
    yield s
    for child in s.machine_cgroups(backend):
        cg = cgroupmachine.MachineCgroup(backend.hierarchy, child, backend.cgroup_parent)
        cg.kill()
        cg.remove()
    shutil.rmtree(s.state, ignore_errors=True)


# libvirt + QEMU -------------------------------------------------------------------------------

@pytest.fixture
def lv():
    """A LibvirtFactory (libvirtfactory) in a directory of its own under /var/tmp, cleaned up
    and removed afterwards."""
    problem = engine_problem()
    require_engine("libvirt", not problem, problem)
    top = tempfile.mkdtemp(prefix="vac-libvirt-cycle-", dir="/var/tmp")
    os.chmod(top, 0o755)           # QEMU runs as libvirt-qemu and must reach the files
    world = LibvirtFactory(top)
    yield world
    world.cleanup()
    shutil.rmtree(top, ignore_errors=True)
