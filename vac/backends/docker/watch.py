# SPDX-License-Identifier: BSD-2-Clause
"""Docker's event stream: a `die` of one of this factory's containers ends its machine."""
from __future__ import annotations

from typing import Any

from vac.backends.watch import OnEnd, Watcher

EVENTS = ["die"]   # also what an OOM kill ends with; not destroy: that is our own removal
QUIET_SECONDS = 3600   # the stream is reopened (not failed) after this long with no event


class DockerWatcher(Watcher):
    backend = "docker"

    def __init__(self, url: str, factory_name: str, on_end: OnEnd):
        super().__init__(on_end)
        self.url = url
        self.factory_name = factory_name
        self.stream: Any = None

    def filters(self) -> dict:
        """What the engine is asked to send: the die events of this factory's containers."""
        return {"type": ["container"], "event": EVENTS,
                "label": [f"vac.factory={self.factory_name}"]}

    def replay(self) -> dict:
        """More arguments of each (re)opening of the stream (a subclass's `since`)."""
        return {}

    def machine_of(self, event: Any) -> str:
        """The machine an event (one the filters let through) says has ended."""
        attributes = (event.get("Actor") or {}).get("Attributes") or {}
        return str(attributes.get("vac.machine") or attributes.get("name") or "")

    def loop(self) -> None:
        import docker
        import requests

        api = docker.APIClient(base_url=self.url, timeout=QUIET_SECONDS, version="auto")
        while not self.stopping.is_set():
            self.stream = api.events(filters=self.filters(), decode=True, **self.replay())
            try:
                for event in self.stream:
                    self.ended(self.machine_of(event))
            except (requests.exceptions.ConnectionError,
                    requests.exceptions.ReadTimeout) as e:
                if self.stopping.is_set():
                    return
                if "timed out" not in str(e).lower():
                    raise
                continue   # an hour without an event: reopen the stream
            self.stopping.wait(0.5)   # the engine closed the stream (a restart): reopen it

    def interrupt(self) -> None:
        if self.stream is not None:
            self.stream.close()
