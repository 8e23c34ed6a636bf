# SPDX-License-Identifier: BSD-2-Clause
"""Podman's event stream (its Docker-compatible /events): a `die` of one of this factory's
containers ends its machine, as with Docker. Podman 4.3 sends nothing at all to a stream
filtered by `type` or `event` (only `label` filters work there), so the stream is filtered by
the factory's label alone and the die events are picked here."""
from __future__ import annotations

from typing import Any, Mapping

from vac.backends.docker.watch import EVENTS, QUIET_SECONDS, DockerWatcher


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

    def loop(self) -> None:
        import docker
        import requests

        api = docker.APIClient(base_url=self.url, timeout=QUIET_SECONDS, version="auto")
        filters = {"label": [f"vac.factory={self.factory_name}"]}
        while not self.stopping.is_set():
            self.stream = api.events(filters=filters, decode=True)
            try:
                for event in self.stream:
                    self.ended(ended_machine(event))
            except (requests.exceptions.ConnectionError,
                    requests.exceptions.ReadTimeout) as e:
                if self.stopping.is_set():
                    return
                if "timed out" not in str(e).lower():
                    raise
                continue   # an hour without an event: reopen the stream
            self.stopping.wait(0.5)   # the engine closed the stream (a restart): reopen it
