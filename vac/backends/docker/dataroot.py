# SPDX-License-Identifier: BSD-2-Clause
"""The Docker engine's data root (its DockerRootDir), where images and containers' writable
layers grow: admission by free disk space watches its filesystem (vac.cycle.hostdisk)."""
from __future__ import annotations

from typing import Any


def data_root(backend: Any) -> str:
    """The data root the engine of this DockerBackend reports, '' when it reports none.

    Raises:
        BackendError, BackendUnavailable: the engine could not be asked.
    """
    with backend._boundary("info"):
        root = backend._client().info().get("DockerRootDir")
    return root if isinstance(root, str) and root.startswith("/") else ""
