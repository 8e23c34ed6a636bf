# SPDX-License-Identifier: BSD-2-Clause
"""Apptainer machines' process exits: a pidfd per machine's head process, polled together.

The machines' pids and start times are in their backend.json; the watcher reads them from the
machine directories of the slots every second (the machines of this factory only), opens a
pidfd for each new one (os.pidfd_open, Linux 5.3 and later) and waits on all of them at once.
Where the kernel has no pidfd it checks each process once a second instead (a cheap poll).
"""
from __future__ import annotations

import os
import select
from typing import Callable, Dict, Set, Tuple

from vac.backends.watch import OnEnd, Watcher
from vac.host import procs
from vac.machine.directory import unfinished_machines

REFRESH_SECONDS = 1.0

# name -> (pid, start time) of the machines to watch
Machines = Callable[[], Dict[str, Tuple[int, int]]]


class ProcessWatcher(Watcher):
    backend = "apptainer"

    def __init__(self, machines: Machines, on_end: OnEnd):
        super().__init__(on_end)
        self.machines = machines
        self.fds: Dict[str, Tuple[int, Tuple[int, int]]] = {}   # name -> (pidfd, (pid, start))
        self.reported: Set[Tuple[str, Tuple[int, int]]] = set()

    def ended_once(self, name: str, who: Tuple[int, int]) -> None:
        """Report a machine's end once (it stays listed until vacd has finished it)."""
        if (name, who) not in self.reported:
            self.reported.add((name, who))
            self.ended(name)

    def loop(self) -> None:
        pidfd = getattr(os, "pidfd_open", None)
        try:
            while not self.stopping.is_set():
                wanted = self.machines()
                if pidfd is None:
                    self._check(wanted)
                    self.stopping.wait(REFRESH_SECONDS)
                    continue
                self._update(wanted, pidfd)
                self._wait()
        finally:
            for fd, _ in self.fds.values():
                os.close(fd)
            self.fds.clear()

    def _update(self, wanted: Dict[str, Tuple[int, int]], pidfd) -> None:
        for name in [n for n, (_, who) in self.fds.items() if wanted.get(n) != who]:
            os.close(self.fds.pop(name)[0])
        self.reported &= set(wanted.items())
        for name, who in wanted.items():
            if name in self.fds or (name, who) in self.reported:
                continue
            try:
                fd = pidfd(who[0])
            except ProcessLookupError:
                self.ended_once(name, who)
                continue
            info = procs.read(who[0])
            if info is None or info.start_time != who[1]:
                os.close(fd)             # the pid now belongs to another process
                self.ended_once(name, who)
                continue
            self.fds[name] = (fd, who)

    def _wait(self) -> None:
        poller = select.poll()
        names = {}
        for name, (fd, _) in self.fds.items():
            poller.register(fd, select.POLLIN)
            names[fd] = name
        for fd, _ in poller.poll(REFRESH_SECONDS * 1000):
            name = names[fd]
            fd, who = self.fds.pop(name)
            os.close(fd)
            self.ended_once(name, who)

    def _check(self, wanted: Dict[str, Tuple[int, int]]) -> None:
        for name, (pid, start) in wanted.items():
            info = procs.read(pid)
            if info is None or not info.alive or info.start_time != start:
                self.ended_once(name, (pid, start))


def running_machines(settings) -> Dict[str, Tuple[int, int]]:
    """(pid, start time) of each slot's unfinished Apptainer machine, from its backend.json."""
    found = {}
    for name, _, directory in unfinished_machines(settings.paths):
        record = directory.read_backend_record()
        pid, start = record.get("pid"), record.get("start_time")
        if record.get("backend") == "apptainer" and isinstance(pid, int) and \
                isinstance(start, int) and pid > 0:
            found[name] = (pid, start)
    return found
