# SPDX-License-Identifier: BSD-2-Clause
"""Talking to the Docker engine: the lazily imported SDK, its exceptions turned into Vac's, and
what its container states and labels mean.

The `docker` package is imported on first use (importing the backend never needs it). Every
docker/requests/urllib3/OS exception raised inside boundary() becomes BackendUnavailable when
the engine cannot be reached, else BackendError, each in one line (describe()).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping, Optional, Tuple

from vac import optional
from vac.backends.docker.spec import NAME
from vac.errors import BackendError, BackendUnavailable
from vac.machine.directory import MachineState


def sdk() -> Any:
    """The docker package, imported on first use."""
    try:
        import docker
    except ImportError as e:
        raise BackendUnavailable(NAME, optional.for_backend(NAME, "docker").text()) from e
    return docker


def foreign_errors() -> Tuple[tuple, tuple]:
    """(engine unreachable, other failure) exception classes of docker, requests, urllib3."""
    docker = sdk()
    import requests
    import urllib3

    unreachable = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                   urllib3.exceptions.HTTPError)
    failed = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
    return unreachable, failed


def describe(e: BaseException) -> str:
    """The most useful one-line text of a docker/requests exception."""
    text = getattr(e, "explanation", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())


@contextlib.contextmanager
def boundary(what: str, machine: Optional[str],
             unreachable_text: Callable[[BaseException], str]) -> Iterator[None]:
    """Turn docker/requests/OS exceptions into BackendError/BackendUnavailable (the latter
    worded by unreachable_text)."""
    try:
        yield
    except BackendError:
        raise
    except Exception as e:
        unreachable, failed = foreign_errors()
        if isinstance(e, unreachable):
            raise BackendUnavailable(NAME, unreachable_text(e), machine) from e
        if isinstance(e, failed):
            raise BackendError(NAME, f"{what}: {describe(e)}", machine) from e
        raise


STATES = {"created": MachineState.STARTING, "running": MachineState.RUNNING,
          "restarting": MachineState.RUNNING, "paused": MachineState.PAUSED}


def state_of(status: str) -> MachineState:
    """Engine container status -> machine state (exited, dead, removing: shut down)."""
    return STATES.get(status, MachineState.SHUTDOWN)


def owned(labels: Optional[Mapping[str, str]], space: str, factory: str) -> bool:
    labels = labels or {}
    return labels.get("vac.space") == space and labels.get("vac.factory") == factory
