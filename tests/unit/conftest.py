# SPDX-License-Identifier: BSD-2-Clause
"""Fixtures shared by the unit tests (tests/conftest.py has those of every directory: paths,
host, make_config, make_factory).

Plain helpers live in modules, imported by name, never from a test module or a conftest:
in tests/, testbed (REPO, REALPIPES, require_engine), fakeclock (Clock, T0) and fakefactory
(factory_over); beside this file, accountingworld (World, fields), cgroupfakes (a fake cgroup
file system and real hosts' mount tables), metadatamachines, dockerspecs, apptainerfakes and
pressuresamples."""
from __future__ import annotations

import functools

import pytest
from accountingworld import World


@pytest.fixture
def world(tmp_path, host):
    """world(settings=...) -> World: a fake-backend factory in tmp_path (accountingworld)."""
    return functools.partial(World, tmp_path, host)
