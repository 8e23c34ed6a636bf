# SPDX-License-Identifier: BSD-2-Clause
"""Running one cycle's steps in parallel, a bounded number at once per backend."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Dict, List, Sequence, Tuple, TypeVar

T = TypeVar("T")


def run_grouped(items: Sequence[T], group_of: Callable[[T], Tuple[str, int]],
                run: Callable[[T], None]) -> None:
    """run(item) for every item. group_of(item) gives (group, width): the items of a group
    with width > 1 run up to width at once on a pool of threads of their own (groups side by
    side); the others one after another in this thread. Returns when all are done; run must
    not raise (it is the caller's bulkhead), and if it does the first exception is raised
    after every item has run."""
    groups: Dict[str, Tuple[int, List[T]]] = {}
    for item in items:
        name, width = group_of(item)
        groups.setdefault(name, (width, []))[1].append(item)
    pools: List[ThreadPoolExecutor] = []
    futures: List[Future] = []
    try:
        for name, (width, group) in groups.items():
            if width > 1 and len(group) > 1:
                pool = ThreadPoolExecutor(max_workers=min(width, len(group)),
                                          thread_name_prefix=f"vac-{name}")
                pools.append(pool)
                futures += [pool.submit(run, item) for item in group]
        for width, group in groups.values():
            if width <= 1 or len(group) <= 1:
                for item in group:
                    run(item)
        for future in futures:
            future.result()
    finally:
        for pool in pools:
            pool.shutdown(wait=True)
