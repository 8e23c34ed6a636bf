# SPDX-License-Identifier: BSD-2-Clause
"""Teardown of a test's scratch: every scratch of its state directory and every capped
joboutputs mounted in its machines/, finished or not (a plain helper for the scratch tests)."""
from __future__ import annotations

import os

from vac.machine import joboutputcap, scratch
from vac.machine.directory import MachineDir


def remove_pool(state: str) -> None:
    """Unmount and remove every scratch of the state directory, and put every capped
    joboutputs back into its plain directory."""
    for name, path in joboutputcap.mounted_in(state, scratch.mounted()):
        joboutputcap.release(MachineDir(path))
    pool = scratch.pool(state)
    for name in os.listdir(pool) if os.path.isdir(pool) else []:
        scratch.remove(state, name[:-len(scratch.IMAGE_SUFFIX)]
                       if name.endswith(scratch.IMAGE_SUFFIX) else name)
