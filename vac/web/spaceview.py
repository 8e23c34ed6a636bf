# SPDX-License-Identifier: BSD-2-Clause
"""The space page's data: every factory of the space as a row of slot cells.

This factory's row is its live slots (vac.web.status). The others come from the hourly
census (`space-census/<factory>`, their factory_status replies: total and running machines),
so their cells say how many slots run, not which. A factory named in `factories` with no
census of the last day, or that did not answer vacd's last poll, is marked silent.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Dict, List, Optional

from vac import fsutil
from vac.config.model import Config
from vac.space import client
from vac.space.census import CENSUS_FRESH, census_dir, fresh_census
from vac.web.status import SpaceView, factory_view

CELLS_LIMIT = 1024      # cells drawn per remote factory (a reply may claim any number)


def _number(reply: Dict[str, Any], key: str) -> int:
    value = reply.get(key)
    number = _finite(value)
    return int(max(0, min(number, 10 ** 9))) if number is not None else 0


def remote_row(name: str, reply: Optional[Dict[str, Any]], when: Optional[float],
               silent: bool) -> Dict[str, Any]:
    """A factory known from the census (or from `factories` alone)."""
    total = _number(reply, "total_machines") if reply else 0
    running = min(_number(reply, "running_machines"), total) if reply else 0
    shown = min(total, CELLS_LIMIT)
    cells = ["running"] * min(running, shown) + ["idle"] * (shown - min(running, shown))
    return {"factory": name, "local": False, "silent": silent or reply is None,
            "census_time": when, "total": total, "running": running, "cells": cells,
            "cut": total > shown,
            "load_average": _finite(reply.get("load_average")) if reply else None,
            "heartbeat_time": _finite(reply.get("factory_heartbeat_time")) if reply else None}


def _finite(value: Any) -> Optional[float]:
    """A number from a reply, or None (not a number, NaN or infinite: strict JSON has none)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def space_view(config: Config, now: Optional[float] = None,
               space: Optional[SpaceView] = None) -> Dict[str, Any]:
    """Everything the space page shows (and /api/space serves)."""
    now = time.time() if now is None else now
    space = space or SpaceView()
    s = config.settings
    own = s.factory_name
    mine = factory_view(config, now, space)
    rows: List[Dict[str, Any]] = [{
        "factory": own, "local": True, "silent": False, "census_time": now,
        "total": len(mine["slots"]), "running": mine["counts"]["running"],
        "cells": [c["state"] for c in mine["slots"]], "cut": False,
        "slots": [c["slot"] for c in mine["slots"]], "load_average": None,
        "heartbeat_time": mine["health"]["cycle_time"]}]
    census = fresh_census(s, now)
    named = [f for f in client.canonical_list(s.factories, own) if f != own]
    for name in sorted(set(named) | set(census)):
        if name == own:
            continue
        when = fsutil.mtime_or_none(os.path.join(census_dir(s), name)) \
            if name in census else None
        rows.append(remote_row(name, census.get(name), when, name in space.silent))
    return {"space": s.vac_space, "factory": own, "time": int(now), "rows": rows,
            "silent": [r["factory"] for r in rows if r["silent"]],
            "census_fresh_seconds": CENSUS_FRESH, "polled": space.polled,
            "health": mine["health"]}
