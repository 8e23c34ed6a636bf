# SPDX-License-Identifier: BSD-2-Clause
"""Podman's event stream (its Docker-compatible /events): a `die` of one of this factory's
containers ends its machine, as with Docker. Podman 4.3 sends nothing at all to a stream
filtered by `type` or `event` (only `label` filters work there), so the stream is filtered by
the factory's label alone and the die events are picked here."""
from __future__ import annotations

from typing import Any, Mapping

from vac.backends.docker.watch import EVENTS, DockerWatcher


def ended_machine(event: Any) -> str:
    """The machine a container event says has ended ('' for any other event)."""
    if not isinstance(event, Mapping) or event.get("Type") != "container":
        return ""
    if (event.get("Action") or event.get("status")) not in EVENTS:
        return ""
    actor = event.get("Actor")
    attributes = actor.get("Attributes") if isinstance(actor, Mapping) else None
    if not isinstance(attributes, Mapping):
        return ""
    return str(attributes.get("vac.machine") or attributes.get("name") or "")


class PodmanWatcher(DockerWatcher):
    backend = "podman"

    def filters(self) -> dict:
        return {"label": [f"vac.factory={self.factory_name}"]}

    def machine_of(self, event: Any) -> str:
        return ended_machine(event)
