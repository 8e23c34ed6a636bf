# SPDX-License-Identifier: BSD-2-Clause
"""Fixtures shared by the integration test modules (plain helpers live in the modules beside
this file, each named for its job: docker_engine, dockerfactory, waiting, ...).

Test modules import their helpers from those modules, never from another test module and never
from "conftest" (tests/testbed.py has REPO and require_engine).
"""
from __future__ import annotations

from typing import List

import pytest
from docker_backend_env import config_text, remove_ours

from vac.backends.docker.backend import DockerBackend


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
