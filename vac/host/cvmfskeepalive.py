# SPDX-License-Identifier: BSD-2-Clause
"""CernVM-FS keep-alive: list /cvmfs/<repo> each cycle for every repository that running
containers use, so that autofs does not unmount it under a long-running machine (containers
bind /cvmfs whole; a repository unmounted by autofs's timeout is not mounted again inside
them). The original did this each cycle; here the planner's Plan.cvmfs_repositories names
them.

Off the cycle's critical path: keep_alive() only starts listings, each in a daemon thread of
its own, and returns at once. Bounded: at most one listing per repository at a time (a
repository whose listing has not returned is not listed again until it does) and at most
MAX_LISTINGS in all, so a hung mount costs one stuck thread, never a stalled cycle or a
growing pile of threads. A repository that cannot be listed (an error, or no answer within
`timeout` seconds) is logged once, as a warning, until a listing of it works again (then
an info line).
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional

log = logging.getLogger(__name__)

CVMFS_ROOT = "/cvmfs"
TIMEOUT_SECONDS = 30.0
MAX_LISTINGS = 64
REPO_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")   # one component, as the backends take


class CvmfsKeepAlive:
    """Lists repositories in the background; keep_alive() is called once a cycle."""

    def __init__(self, root: str = CVMFS_ROOT, timeout: float = TIMEOUT_SECONDS,
                 lister: Callable[[str], List[str]] = os.listdir,
                 clock: Callable[[], float] = time.monotonic):
        self.root = root
        self.timeout = timeout
        self.lister = lister
        self.clock = clock
        self._lock = threading.Lock()
        self._running: Dict[str, float] = {}      # repository -> when its listing began
        self._failing: Dict[str, str] = {}        # repository -> why (logged once)

    def keep_alive(self, repositories: Iterable[str]) -> None:
        """Start a listing of each repository not being listed already; never blocks."""
        now = self.clock()
        for repo in sorted(set(repositories)):
            if not REPO_RE.match(repo):
                self._failed(repo, "not a repository name: refused")
                continue
            with self._lock:
                began = self._running.get(repo)
                busy = began is not None or len(self._running) >= MAX_LISTINGS
                if not busy:
                    self._running[repo] = now
            if began is not None and now - began > self.timeout:
                self._failed(repo, f"listing {self._path(repo)} has not returned in "
                                   f"{now - began:.0f} s (a hung mount?)")
            if not busy:
                self._start(repo)

    def _start(self, repo: str) -> None:
        try:
            threading.Thread(target=self._list, args=(repo,), daemon=True,
                             name=f"cvmfs-keepalive-{repo}").start()
        except RuntimeError as e:   # no thread to be had: try again next cycle
            with self._lock:
                self._running.pop(repo, None)
            self._failed(repo, f"no thread to list it: {e}")

    def running(self) -> List[str]:
        """The repositories whose listing has not returned yet."""
        with self._lock:
            return sorted(self._running)

    def failing(self) -> Dict[str, str]:
        """Repository -> why it could not be listed, while that lasts."""
        with self._lock:
            return dict(self._failing)

    def _path(self, repo: str) -> str:
        return os.path.join(self.root, repo)

    def _list(self, repo: str) -> None:
        problem: Optional[str] = None
        try:
            self.lister(self._path(repo))
        except OSError as e:
            problem = f"cannot list {self._path(repo)}: {e.strerror or e}"
        except Exception as e:  # noqa: BLE001 - a stand-in's or autofs's surprise, not ours
            problem = f"cannot list {self._path(repo)}: {e}"
        finally:
            with self._lock:
                self._running.pop(repo, None)
        if problem is not None:
            self._failed(repo, problem)
        else:
            self._recovered(repo)

    def _failed(self, repo: str, why: str) -> None:
        with self._lock:
            first = repo not in self._failing
            self._failing[repo] = why
        if first:
            log.warning("cvmfs keep-alive: repository %s: %s", repo[:80], why)

    def _recovered(self, repo: str) -> None:
        with self._lock:
            was = self._failing.pop(repo, None)
        if was is not None:
            log.info("cvmfs keep-alive: repository %s listed again", repo)
