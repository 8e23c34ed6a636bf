# SPDX-License-Identifier: BSD-2-Clause
"""vacd as a real process in the cycle tests: start it, read the cycles it logged, stop it."""
from __future__ import annotations

import os
import subprocess
import sys
from typing import List, Mapping, Optional, Sequence

from testbed import REPO


def start_vacd(config_file: str, log_path: str, extra: Sequence[str] = (),
               env: Optional[Mapping[str, str]] = None) -> subprocess.Popen:
    """vacd --foreground with 1-second cycles (and the extra arguments), logging to log_path;
    `env` adds to the environment (VAC_TEST_CRASH_AT for the crash tests)."""
    log = open(log_path, "w")
    env = dict(os.environ, **(env or {}),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        return subprocess.Popen([sys.executable, "-m", "vac.daemon", "--config", config_file,
                                 "--foreground", "--cycle-seconds", "1", *extra], cwd=REPO,
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    finally:
        log.close()


def cycles_logged(log_path: str) -> List[str]:
    with open(log_path) as f:
        return [line for line in f if "vacd[" in line and ": INFO cycle " in line]


def stop(proc: subprocess.Popen, sig: int, timeout: float = 30) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    proc.wait(timeout=timeout)
