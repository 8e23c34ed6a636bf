# SPDX-License-Identifier: BSD-2-Clause
"""Shared fixtures: a state directory under tmp_path, configs from text, engine requirements."""
from __future__ import annotations

import os
import textwrap

import pytest

from vac.config import load, model
from vac.host.facts import HostFacts
from vac.paths import Paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Real Vacuum Pipes and user_data template parts, copied into the repository (ORIGIN.md there).
REALPIPES = os.path.join(REPO, "tests", "data", "realpipes")


def require_engine(name: str, available: bool, reason: str = "") -> None:
    """Skip a test whose engine is missing, but fail it under CI=true."""
    if available:
        return
    message = f"{name} is not available here: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: a missing engine is a failure)")
    pytest.skip(message)


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
        conf.write_text(body)
        raw = load.read_raw([str(conf)])
        return load.build(raw, host_facts or host, pipe_values=pipe_values)

    return make
