# SPDX-License-Identifier: BSD-2-Clause
"""Podman's event stream (its Docker-compatible /events): a `die` of one of this factory's
containers ends its machine, as with Docker. Podman 4.3 sends nothing at all to a stream
filtered by `type` or `event` (only `label` filters work there), so the stream is filtered by
the factory's label alone and the die events are picked here.

Podman answers /version slowly (it asks its runtime and conmon), and the SDK asks it before
the stream opens: a container that died meanwhile would be missed until the next cycle. So
each opening asks for the events since the last one seen (at first: since the watcher was
made, before the cycle that follows creates anything); a die seen twice only asks for a
refill of a slot that is already being refilled or is full."""
from __future__ import annotations

import time
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

    def __init__(self, url: str, factory_name: str, on_end) -> None:
        super().__init__(url, factory_name, on_end)
        self.since = int(time.time()) - 1

    def replay(self) -> dict:
        return {"since": self.since}

    def filters(self) -> dict:
        return {"label": [f"vac.factory={self.factory_name}"]}

    def machine_of(self, event: Any) -> str:
        when = event.get("time") if isinstance(event, Mapping) else None
        if isinstance(when, int) and when > self.since:
            self.since = when
        return ended_machine(event)
