# SPDX-License-Identifier: BSD-2-Clause
"""Podman's event watcher: each opening of the stream asks for the events since the last one
seen (at first since the watcher was made), so a container that dies while the slow /version
of the SDK's first call is answered still ends its machine; only die events name a machine."""
from __future__ import annotations

import time

from vac.backends.docker.watch import DockerWatcher
from vac.backends.podman.watch import PodmanWatcher


def die(machine: str, when: int) -> dict:
    return {"Type": "container", "Action": "die", "time": when,
            "Actor": {"Attributes": {"vac.machine": machine}}}


def test_the_first_opening_replays_from_when_the_watcher_was_made():
    before = int(time.time())
    watcher = PodmanWatcher("unix:///x", "f.example.com", lambda name: None)
    assert before - 1 <= watcher.replay()["since"] <= int(time.time())
    assert DockerWatcher("unix:///x", "f.example.com", lambda name: None).replay() == {}


def test_a_reopening_replays_from_the_last_event_seen():
    watcher = PodmanWatcher("unix:///x", "f.example.com", lambda name: None)
    start = watcher.replay()["since"]
    assert watcher.machine_of(die("m1", start + 50)) == "m1"
    assert watcher.machine_of({"Type": "container", "Action": "start", "time": start + 60,
                               "Actor": {"Attributes": {"vac.machine": "m2"}}}) == ""
    assert watcher.replay() == {"since": start + 60}
    assert watcher.machine_of(die("m3", start + 10)) == "m3"      # late: since stays
    assert watcher.machine_of({"time": "hostile"}) == ""
    assert watcher.replay() == {"since": start + 60}
