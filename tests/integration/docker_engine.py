# SPDX-License-Identifier: BSD-2-Clause
"""The Docker engine the integration tests use: its socket, the local test image, an API
client, the engine-and-image gate, and a container's inspection or absence."""
from __future__ import annotations

import pytest
from testbed import require_engine
from waiting import ENGINE_CALL

IMAGE = "vac-test/busybox:1"
ENGINE = "unix:///var/run/docker.sock"


def sdk():
    import docker
    return docker.APIClient(base_url=ENGINE, timeout=ENGINE_CALL)


def engine_ready() -> None:
    """require_engine("docker"), and the local image must be there."""
    try:
        import docker
        api = sdk()
        api.version()
    except Exception as e:  # any failure means: no engine here
        require_engine("docker", False, f"{type(e).__name__}: {e}")
        return
    try:
        api.inspect_image(IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {IMAGE} missing: run scripts/ci/setup-docker.sh")


def inspect(container_id: str) -> dict:
    return sdk().inspect_container(container_id)


def gone(container_id: str) -> bool:
    import docker
    try:
        sdk().inspect_container(container_id)
    except docker.errors.NotFound:
        return True
    return False
