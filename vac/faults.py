# SPDX-License-Identifier: BSD-2-Clause
"""Fault injection for the crash tests: SIGKILL this process at a named point of a step.

The tests start vacd with VAC_TEST_CRASH_AT=<point> (for example `finish:after-finished`) and
check what a restarted vacd makes of the state the kill left. Unset, a crash point costs one
dictionary lookup.
"""
from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

CRASH_ENV = "VAC_TEST_CRASH_AT"

# Every point between two steps of creation, finishing and destroy, in order.
POINTS = (
    "create:after-slot-record", "create:after-makedirs", "create:after-populate",
    "create:after-backend", "create:after-started",
    "destroy:after-message", "destroy:after-backend",
    "finish:after-collect", "finish:after-message", "finish:after-finished",
    "finish:after-finishes",
)


def crash_point(name: str) -> None:
    """SIGKILL this process here if the tests asked for it (VAC_TEST_CRASH_AT=name)."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("fault injection: SIGKILL at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)
