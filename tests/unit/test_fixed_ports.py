# SPDX-License-Identifier: BSD-2-Clause
"""No fixed port number is shared by the unit tests and the contract or integration tests.

scripts/run-tests runs the unit tests in a pytest of their own beside the contract and
integration tests: a port both sides name could be held by one while the other binds it or
checks that it is free. Numbers on lines that speak of ports, binds, servers or local addresses
are compared; NOT_PORTS are the numbers both sides write that nothing listens on.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Dict, List

from testbed import REPO

PORTISH = re.compile(r"port|bind|server|127\.0\.0\.1|::1|localhost", re.IGNORECASE)
NUMBER = re.compile(r"\b(\d{4,5})\b")
NOT_PORTS = {
    2001: "2001:db8::, the IPv6 documentation prefix, in addresses",
    3128: "squid's http_port in squid configuration text",
    5900: "the VNC base port, in arithmetic on slot ordinals",
    18650: "the local registry's address in image names: the unit tests only parse them",
}


def _numbers(*patterns: str) -> Dict[int, List[str]]:
    """Port-like numbers on port-ish lines of the test files: number -> [file:line]."""
    found: Dict[int, List[str]] = {}
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(REPO, "tests", pattern))):
            with open(path, encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not PORTISH.search(line):
                        continue
                    for text in NUMBER.findall(line):
                        if 1024 <= int(text) <= 65535:
                            where = f"{os.path.relpath(path, REPO)}:{lineno}"
                            found.setdefault(int(text), []).append(where)
    return found


def test_unit_tests_share_no_fixed_port_with_the_tests_beside_them():
    unit = _numbers("unit/*.py")
    others = _numbers("contract/*.py", "integration/*.py", "*.py")
    shared = {n: (unit[n][0], others[n][0]) for n in set(unit) & set(others) - set(NOT_PORTS)}
    assert shared == {}, f"ports named by a unit test and a test that runs beside it: {shared}"


def test_the_scan_sees_the_ports_the_unit_tests_bind():
    unit = _numbers("unit/*.py")
    assert 19156 in unit and "tests/unit/test_gocdb.py" in unit[19156][0]
