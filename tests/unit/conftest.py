# SPDX-License-Identifier: BSD-2-Clause
"""Fixtures shared by the unit tests (tests/conftest.py has those of every directory).

Plain helpers live in modules beside this one, imported by name: fakeclock (Clock, T0),
accountingworld (World, fields), cgroupfakes (a fake cgroup file system), metadatamachines,
dockerspecs, apptainerfakes and pressuresamples."""
from __future__ import annotations

import functools

import pytest
from accountingworld import World


@pytest.fixture
def world(tmp_path, host):
    """world(settings=...) -> World: a fake-backend factory in tmp_path (accountingworld)."""
    return functools.partial(World, tmp_path, host)
