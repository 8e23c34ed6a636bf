# SPDX-License-Identifier: BSD-2-Clause
""".ci/run's exit trap, as the file sets it: run under the same `set -euo pipefail` after a
whole run, when the guest's process group has already gone, it must leave the run's exit
code alone (a failing kill there once turned a green run into exit 1) and remove the
guest's background directory."""
from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

CI_RUN = Path(__file__).resolve().parents[2] / ".ci" / "run"


def _exit_trap() -> str:
    found = re.findall(r"^\s*trap '(.*)' EXIT$", CI_RUN.read_text(), re.MULTILINE)
    assert len(found) == 1, f"{CI_RUN}: expected one EXIT trap, found {found}"
    return found[0]


def _run_with_trap(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    background = tmp_path / "vac-v2bg"
    background.mkdir()
    # A process group that cannot exist: the guest's run has ended and been collected.
    (background / "pid").write_text(f"{2 ** 22 + 1}\n")
    script = (f"set -euo pipefail\nVAC_V2_BACKGROUND={background}\n"
              f"trap '{_exit_trap()}' EXIT\n{body}\n")
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)


def test_a_green_run_stays_green_when_the_guest_has_gone(tmp_path):
    done = _run_with_trap(tmp_path, "echo the tests passed")
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(tmp_path / "vac-v2bg")


@pytest.mark.parametrize("code", [1, 3])
def test_a_failed_run_keeps_its_exit_code(tmp_path, code):
    done = _run_with_trap(tmp_path, f"exit {code}")
    assert done.returncode == code, done.stderr
    assert not os.path.exists(tmp_path / "vac-v2bg")
