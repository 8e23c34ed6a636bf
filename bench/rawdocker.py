# SPDX-License-Identifier: BSD-2-Clause
"""The raw side of the Docker benchmarks: the engine, the image, the command, containers.run.

Both sides start the same image and the same command (a shell that execs `sleep`) and are timed
until the engine says the container is running.
"""
from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

IMAGE = "vac-test/busybox:1"
ENGINE = "unix:///var/run/docker.sock"
USER_DATA = "#!/bin/sh\nexec sleep 300\n"
RAW_COMMAND = ["/bin/sh", "-c", "exec sleep 300"]


def until_running(api, container_id: str) -> None:
    while not api.inspect_container(container_id)["State"]["Running"]:
        time.sleep(0.005)


def raw_run(client, api, name: str,
            labels: Optional[Dict[str, str]] = None) -> Tuple[float, Any]:
    """(seconds from client.containers.run(detach=True) until running, the container)."""
    extra = {"labels": labels} if labels else {}
    start = time.perf_counter()
    container = client.containers.run(IMAGE, RAW_COMMAND, name=name, detach=True, **extra)
    until_running(api, container.id)
    return time.perf_counter() - start, container


def raw_fill(client, api, names, width: int,
             labels: Optional[Dict[str, str]] = None) -> float:
    """Seconds to have every named container running, `width` containers.run calls at once."""
    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=width) as pool:
        list(pool.map(lambda name: raw_run(client, api, name, labels), names))
    return time.perf_counter() - start
