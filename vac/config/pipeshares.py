# SPDX-License-Identifier: BSD-2-Clause
"""A pipe's target shares: each entry's share read safely, and their total kept finite.

vac.config.pipes rescales each entry's share to T_section x share / T_pipe; shares come from a
hostile document, so a share is a bounded, finite, non-negative number or nothing, and the
total is kept as peak x relative sum so that shares near the float limit cannot overflow.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional

MAX_NUMBER_CHARS = 40


def share_of(raw: Any) -> Optional[float]:
    """A non-negative finite number from a JSON number or numeric string, else None."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        return None
    if isinstance(raw, str) and len(raw) > MAX_NUMBER_CHARS:
        return None
    try:
        number = float(raw)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


class PipeTotal:
    """The sum of a pipe's target shares, kept as peak x (sum of shares / peak) so that
    shares near the float limit (1e308) rescale without overflowing to infinity."""

    def __init__(self, shares: List[float]):
        self.peak = max(shares, default=0.0)
        self.relative = math.fsum(s / self.peak for s in shares) if self.peak > 0 else 0.0

    def fraction(self, share: float) -> float:
        """share / the pipe's total, in [0, 1]."""
        return (share / self.peak) / self.relative if self.relative > 0 else 0.0
