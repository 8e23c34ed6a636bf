# SPDX-License-Identifier: BSD-2-Clause
"""GOCDB: placeholder until the publisher lands."""
from __future__ import annotations

from vac.config.model import Config


def update_if_due(config: Config, now: float) -> bool:
    return False
