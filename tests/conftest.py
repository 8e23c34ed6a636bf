# SPDX-License-Identifier: BSD-2-Clause
"""Shared fixtures: a state directory under tmp_path, configs from text, engine requirements."""
from __future__ import annotations

import os
import textwrap

import pytest
from fakeclock import Clock
from fakefactory import factory_over
from testbed import REALPIPES, REPO, require_engine  # noqa: F401

from vac.backends.fake import FakeBackend
from vac.config import load, model
from vac.host.facts import HostFacts
from vac.paths import Paths


@pytest.fixture
def paths(tmp_path) -> Paths:
    p = Paths(str(tmp_path / "state"))
    p.ensure()
    return p


@pytest.fixture
def host() -> HostFacts:
    users = {"vacsngly": 990, "root": 0}
    return HostFacts(fqdn="f1.example.com", processors=4, uid_of=users.get,
                     vg_exists=lambda name: name == "vac_volume_group")


@pytest.fixture
def make_config(tmp_path, paths, host):
    """make_config(text, **kw) -> Config built from vac.conf text with state_dir = paths."""

    def make(text: str, pipe_values=None, host_facts=None) -> model.Config:
        body = textwrap.dedent(text)
        if "state_dir" not in body:
            body = body.replace("[settings]", f"[settings]\nstate_dir = {paths.state_dir}", 1)
        conf = tmp_path / "vac.conf"
        if not conf.exists() or conf.read_text() != body:
            # Atomic: a vacd a test started may read the file at any moment.
            fresh = tmp_path / ".vac.conf.new"
            fresh.write_text(body)
            os.replace(fresh, conf)
        raw = load.read_raw([str(conf)])
        return load.build(raw, host_facts or host, pipe_values=pipe_values)

    return make


# A factory on the fake backend with an injected clock (the cycle tests of tests/unit) --------

FAKE_FACTORY_CONF = """
[settings]
state_dir = {state}
vac_space = vac01.example.com
factory_name = f1.example.com
enable_fake_backend = true
host_processors = 3
overload_per_processor = 100
max_creations_per_cycle = {cap}

[machinetype alpha]
machine_model = fake
target_share = 1
user_data = {user_data}
backoff_seconds = 1000
fake_run_seconds = 5000
"""


@pytest.fixture
def make_factory(tmp_path, paths, host):
    """make_factory(cap, backend_class) -> (Factory, its fake backend, its Clock)."""
    template = tmp_path / "user_data"
    template.write_text("#!/bin/sh\n# ##user_data_uuid##\n")

    def make(cap: int = 100, backend_class=FakeBackend):
        conf = tmp_path / "vac.conf"
        conf.write_text(FAKE_FACTORY_CONF.format(state=paths.state_dir, cap=cap,
                                                 user_data=template))

        def read_config():
            return load.build(load.read_raw([str(conf)]), host)

        clock = Clock()
        backend = backend_class(read_config().settings, clock=clock)
        return factory_over(read_config, backend, clock), backend, clock

    return make


