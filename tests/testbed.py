# SPDX-License-Identifier: BSD-2-Clause
"""Where the repository is, and whether an engine a test needs is on this host.

A plain module, not a conftest: each test directory has a conftest.py of its own, and a test
module's `from conftest import ...` would get whichever of them pytest imported last.
"""
from __future__ import annotations

import os

import pytest

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
