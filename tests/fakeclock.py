# SPDX-License-Identifier: BSD-2-Clause
"""A clock the test moves by hand: call it for the time, set or add to `now` to move it."""
from __future__ import annotations

# 2023-11-14 22:13:20 UTC: the time most unit tests start at.
T0 = 1_700_000_000.0


class Clock:
    """Returns `now`, which only the test changes."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
