# SPDX-License-Identifier: BSD-2-Clause
"""A host pressure record as vac.host.pressure writes it: memory some and full, cpu some with
values the kernel did not give (None)."""
from __future__ import annotations

PRESSURE = {"time": 10.0, "interval": 60.0,
            "memory": {"some": {"avg10": 31.5, "avg60": 12.0, "avg300": 3.0,
                                "total_seconds": 40.5, "stall_seconds": 2.0},
                       "full": {"avg10": 10.0, "avg60": 4.0, "avg300": 1.0,
                                "total_seconds": 12.0, "stall_seconds": 1.0}},
            "cpu": {"some": {"avg10": 5.0, "avg60": None, "avg300": 1.0,
                             "total_seconds": None, "stall_seconds": None}}}
