# SPDX-License-Identifier: BSD-2-Clause
"""A Factory for tests: one backend (registered as "fake"), a clock the test moves, no load from
outside Vac, a seeded random choice, and a start long enough ago that nothing waits for it."""
from __future__ import annotations

import random
from typing import Callable, Optional

from vac.backends.base import Backend
from vac.config.model import Config, Settings
from vac.cycle.backendpool import BackendPool
from vac.cycle.factory import Factory


def factory_over(load_config: Callable[[], Config], backend: Backend, clock: Callable[[], float],
                 settings: Optional[Settings] = None, **kw) -> Factory:
    """Factory(load_config, ...) over `backend`, started 10,000 s before clock(); `kw` go to
    Factory (e.g. owner_load, after_prepare)."""
    pool = BackendPool(settings or load_config().settings, {"fake": backend})
    factory = Factory(load_config, pool, clock=clock, loadavg=lambda: (0.0, 0.0, 0.0),
                      rng=random.Random(1), **kw)
    factory.started = clock() - 10_000
    return factory
