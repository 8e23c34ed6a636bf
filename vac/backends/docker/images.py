# SPDX-License-Identifier: BSD-2-Clause
"""Docker images: a tag resolved to an image id and repo digest, refreshed in the background.

A machinetype with `docker_pull_seconds` set has its tag re-resolved from the registry (a
pull) at most every docker_pull_seconds by the ImageTracker's own thread, never in a creation:
creations use the last resolved image id, so a new version reaches the next machines after at
most one interval and a slow or dead registry never delays a creation. A failed refresh keeps
the last good image in use and says so (a warning naming machinetype, image and error, at most
every FAILURE_LOG_SECONDS while it lasts, and `docker-images.json` in the state directory,
which `vac slots` shows). Unset (the default) the tag is resolved from the local engine at
each creation and pulled only when missing, as the original did.

The timing rules (`due`, `seconds_until_due`, `should_log`) are pure: the clock is an argument.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Optional, Set

from vac import fsutil
from vac.errors import BackendError

log = logging.getLogger(__name__)

NAME = "docker"
FAILURE_LOG_SECONDS = 600.0   # a lasting registry failure is logged again at most this often
IDLE_WAKE_SECONDS = 60.0      # the thread's longest sleep (new tags wake it at once)


@dataclass(frozen=True)
class Resolved:
    """What a tag named when it was last resolved: the engine's image id and, if the image
    came from a registry, its repo digest (`name@sha256:...`)."""

    image: str
    image_id: str
    digest: str = ""

    @property
    def version(self) -> str:
        """The version a machine records: the repo digest, else the image id."""
        return self.digest or self.image_id


@dataclass
class Tracked:
    """One tag the tracker refreshes, with its last good resolution and its last failure."""

    image: str
    interval: float
    pull_timeout: float
    machinetypes: Set[str] = field(default_factory=set)
    resolved: Optional[Resolved] = None
    last_attempt: Optional[float] = None     # monotonic
    checked: Optional[float] = None          # wall clock of the last good refresh
    error: str = ""
    failing_since: Optional[float] = None    # wall clock
    last_logged: Optional[float] = None      # monotonic


# Pure rules --------------------------------------------------------------------------------

def due(last_attempt: Optional[float], interval: Optional[float], now: float) -> bool:
    """Is a tag due for re-resolving? Never without an interval; at once if never tried;
    else once `interval` seconds have passed since the last attempt (good or failed)."""
    if interval is None:
        return False
    return last_attempt is None or now - last_attempt >= interval


def seconds_until_due(last_attempt: Optional[float], interval: float, now: float) -> float:
    """How long until due() turns true (0 if it is already)."""
    if last_attempt is None:
        return 0.0
    return max(0.0, last_attempt + interval - now)


def should_log(last_logged: Optional[float], now: float,
               every: float = FAILURE_LOG_SECONDS) -> bool:
    """Log a lasting failure again? The first time, then at most every `every` seconds."""
    return last_logged is None or now - last_logged >= every


def repository_of(image: str) -> str:
    """The repository part of an image reference (without :tag or @digest)."""
    name = image.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    if ":" in last:
        last = last.split(":", 1)[0]
    return f"{head}{slash}{last}"


def repo_digest(image: str, repo_digests: Iterable[str]) -> str:
    """The entry of RepoDigests that belongs to image's repository, or ''."""
    repo = repository_of(image)
    names = {repo, f"docker.io/{repo}", f"docker.io/library/{repo}", f"library/{repo}"}
    for digest in repo_digests or ():
        if digest.split("@", 1)[0] in names:
            return str(digest)
    return ""


# Engine calls ------------------------------------------------------------------------------

def inspect(api: Any, image: str) -> Resolved:
    """The local engine's resolution of image (docker.errors.ImageNotFound if it has none)."""
    attrs = api.inspect_image(image)
    return Resolved(image, str(attrs["Id"]), repo_digest(image, attrs.get("RepoDigests") or []))


def pull(api: Any, image: str, limit: float, machine: Optional[str] = None) -> None:
    """Pull image within `limit` seconds.

    Raises:
        BackendError: the engine reported an error, or the pull was not done in time (engine
            exceptions pass through for the caller's boundary).
    """
    deadline = time.monotonic() + limit
    for event in api.pull(image, stream=True, decode=True):
        if isinstance(event, dict) and event.get("error"):
            raise BackendError(NAME, f"cannot pull image {image}: {event['error']}", machine)
        if time.monotonic() > deadline:
            raise BackendError(NAME, f"cannot pull image {image}: not done after {limit:g} s",
                               machine)


def one_line(e: BaseException) -> str:
    """A docker/requests exception as one line."""
    text = getattr(e, "explanation", None) or str(e) or type(e).__name__
    return " ".join(str(text).split())


# The tracker -------------------------------------------------------------------------------

class ImageTracker:
    """The tags of machinetypes with docker_pull_seconds, refreshed by a thread of its own.

    `connect()` returns a new docker APIClient (one per refresh pass, closed after it: an
    engine restart costs nothing); `status_path()` names the status file (None: none).
    Without `background` no thread is started: the caller runs refresh_due() (tests).
    """

    def __init__(self, connect: Callable[[], Any], status_path: Callable[[], Optional[str]],
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, background: bool = True):
        self.connect = connect
        self.status_path = status_path
        self.clock = clock
        self.wall = wall
        self.background = background
        self._tags: Dict[str, Tracked] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    def current(self, image: str) -> Optional[Resolved]:
        """The last good resolution of a tracked tag (None: not tracked or never resolved)."""
        with self._lock:
            tracked = self._tags.get(image)
            return tracked.resolved if tracked is not None else None

    def remember(self, machinetype: str, image: str, interval: float, pull_timeout: float,
                 resolved: Resolved, pulled: bool) -> None:
        """Track image (resolved in a creation; `pulled` if that creation pulled it, which
        counts as an attempt) and start the thread if it is not running. A resolution the
        thread made meanwhile is kept unless this one comes from a pull."""
        with self._lock:
            tracked = self._tags.get(image)
            changed = tracked is None or pulled or tracked.resolved is None or \
                machinetype not in tracked.machinetypes or \
                (tracked.interval, tracked.pull_timeout) != (interval, pull_timeout)
            if tracked is None:
                tracked = self._tags[image] = Tracked(image, interval, pull_timeout)
            tracked.interval, tracked.pull_timeout = interval, pull_timeout
            tracked.machinetypes.add(machinetype)
            if tracked.resolved is None or pulled:
                tracked.resolved = resolved
            if pulled:
                tracked.last_attempt, tracked.checked = self.clock(), self.wall()
        if changed:   # the common case, a creation from the known image, writes nothing
            self._write_status()
            self._start()
            self._wake.set()

    def drop(self, machinetype: str, image: str) -> None:
        """The machinetype no longer sets docker_pull_seconds: stop refreshing the tag for
        it (and at all once no machinetype wants it)."""
        with self._lock:
            tracked = self._tags.get(image)
            if tracked is None or machinetype not in tracked.machinetypes:
                return
            tracked.machinetypes.discard(machinetype)
            if not tracked.machinetypes:
                del self._tags[image]
        self._write_status()

    def forget(self, image: str) -> None:
        """The engine lost the resolved image (removed by hand): resolve it anew next time."""
        with self._lock:
            tracked = self._tags.get(image)
            if tracked is not None:
                tracked.resolved = None

    def stop(self) -> None:
        """Stop the thread (tests; vacd's thread is a daemon)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stopping or not self.background:
                return
            self._thread = threading.Thread(target=self._run, name="vac-docker-images",
                                            daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.refresh_due()
            except Exception:  # noqa: BLE001 - the refresher must outlive any one failure
                log.exception("docker image refresh failed")
            self._wake.wait(self._sleep_seconds())
            self._wake.clear()

    def _sleep_seconds(self) -> float:
        now = self.clock()
        with self._lock:
            waits = [seconds_until_due(t.last_attempt, t.interval, now)
                     for t in self._tags.values()]
        return min([IDLE_WAKE_SECONDS] + waits) + 0.01

    def refresh_due(self) -> List[str]:
        """One pass: pull and re-resolve every tag that is due; return the tags tried."""
        now = self.clock()
        with self._lock:
            todo = [t for t in self._tags.values() if due(t.last_attempt, t.interval, now)]
            for tracked in todo:
                tracked.last_attempt = now
        if not todo:
            return []
        try:
            api = self.connect()
        except Exception as e:  # noqa: BLE001 - every failure keeps the last good image
            for tracked in todo:
                self._failed(tracked, f"Docker engine not reachable: {one_line(e)}")
            self._write_status()
            return [t.image for t in todo]
        try:
            for tracked in todo:
                self._refresh(api, tracked)
        finally:
            close = getattr(api, "close", None)
            if close is not None:
                close()
        self._write_status()
        return [t.image for t in todo]

    def _refresh(self, api: Any, tracked: Tracked) -> None:
        try:
            pull(api, tracked.image, tracked.pull_timeout)
            fresh = inspect(api, tracked.image)
        except Exception as e:  # noqa: BLE001 - every failure keeps the last good image
            self._failed(tracked, one_line(e))
            return
        with self._lock:
            old, tracked.resolved = tracked.resolved, fresh
            recovered = tracked.error
            tracked.error, tracked.failing_since, tracked.last_logged = "", None, None
            tracked.checked = self.wall()
            who = ", ".join(sorted(tracked.machinetypes))
        if recovered:
            log.info("machinetype %s: image %s refreshed again from its registry", who,
                     tracked.image)
        if old is None or old.image_id != fresh.image_id:
            log.info("machinetype %s: image %s is now %s (%s); new machines start from it",
                     who, tracked.image, fresh.version, fresh.image_id[:19])

    def _failed(self, tracked: Tracked, error: str) -> None:
        """Keep the last good image; record the failure; log it, rate-limited."""
        now = self.clock()
        with self._lock:
            tracked.error = error
            if tracked.failing_since is None:
                tracked.failing_since = self.wall()
            speak = should_log(tracked.last_logged, now)
            if speak:
                tracked.last_logged = now
            kept = tracked.resolved.version if tracked.resolved else "none yet"
            who = ", ".join(sorted(tracked.machinetypes))
        if speak:
            log.warning("machinetype %s: cannot refresh image %s from its registry: %s; "
                        "new machines keep starting from the last good image (%s)",
                        who, tracked.image, error, kept)

    def status(self) -> Dict[str, Dict[str, Any]]:
        """Each tracked tag: machinetypes, last good version and id, when last refreshed,
        the current failure (JSON-ready; what `vac slots` shows)."""
        with self._lock:
            return {t.image: _status_of(t) for t in self._tags.values()}

    def _write_status(self) -> None:
        path = self.status_path()
        if not path:
            return
        body = {"time": int(self.wall()), "images": self.status()}
        try:
            fsutil.atomic_write(path, json.dumps(body, sort_keys=True, indent=1,
                                                 allow_nan=False))
        except OSError as e:
            log.warning("cannot write %s: %s", path, e)


def _status_of(tracked: Tracked) -> Dict[str, Any]:
    resolved = tracked.resolved
    return {"machinetypes": sorted(tracked.machinetypes), "pull_seconds": tracked.interval,
            "image_id": resolved.image_id if resolved else "",
            "image_version": resolved.version if resolved else "",
            "checked": int(tracked.checked) if tracked.checked is not None else None,
            "error": tracked.error,
            "failing_since": int(tracked.failing_since)
            if tracked.failing_since is not None else None}
