# SPDX-License-Identifier: BSD-2-Clause
"""One version string: vac/__init__.py's, read by setup.py and given to vac.spec by
scripts/build-rpm; no other file of the package spells a version of its own."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from testbed import REPO

import vac


def test_setup_py_reports_the_package_version():
    done = subprocess.run([sys.executable, "setup.py", "--version"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == vac.__version__
    assert "normaliz" not in done.stderr.lower(), "the string must already be PEP 440 canonical"


def test_the_spec_takes_its_version_from_build_rpm():
    with open(os.path.join(REPO, "vac.spec")) as f:
        spec = f.read()
    assert re.search(r"^Version:\s+%\{vac_version\}$", spec, re.M)
    with open(os.path.join(REPO, "scripts", "build-rpm")) as f:
        assert "vac/__init__.py" in f.read()


def test_vac_and_vacd_say_the_same_version():
    for module, prog in (("vac.cli", "vac"), ("vac.daemon", "vacd")):
        done = subprocess.run([sys.executable, "-m", module, "--version"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
        assert done.stdout.strip() == f"{prog} {vac.__version__}"
