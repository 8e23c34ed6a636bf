# SPDX-License-Identifier: BSD-2-Clause
"""The pipe cache on disk: where each pipe's last good document lives, and when it is due.

One file per pipe, pipescache/PREFIX.pipe, written once and atomically with the URL it came from
(key CACHE_URL_KEY); its mtime is the time of the fetch. Vac 03.00.02 named its copy by the
URL-quoted URL (legacy_cache_path): read while ours is missing, never removed. Parsing the
bytes is vac.config.pipes' job; this module only reads, writes and dates them.
"""
from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Tuple

from vac.errors import StateError
from vac.fsutil import atomic_write, mtime_or_none, read_bytes_nofollow
from vac.paths import Paths

MAX_PIPE_BYTES = 1024 * 1024
MAX_CACHE_BYTES = 4 * MAX_PIPE_BYTES      # re-serialised with ASCII escapes: at most ~3x
CACHE_URL_KEY = "vac_pipe_url"
CLOCK_SLACK_SECONDS = 300
FETCHABLE = ("https://", "http://", "file://")


@dataclass(frozen=True)
class PipeState:
    """One pipe as its cache stands: what a fetcher needs and what `vac config check` shows.

    fetched: mtime of the usable cached copy (None: not fetched yet, or the copy is unusable).
    due:     a fetch is wanted (no usable copy, older than its cache_seconds, or from the future).
    """

    prefix: str
    url: str
    cache: str
    fetched: Optional[float]
    due: bool

    @property
    def fetchable(self) -> bool:
        return self.url.startswith(FETCHABLE)

    @property
    def where(self) -> str:
        return f"{self.url} (pipe {self.prefix})"

    def note(self) -> Optional[str]:
        """A sentence for an admin when this pipe gives nothing yet, else None."""
        if self.fetched is not None:
            return None
        return (f"{self.where}: not fetched yet, so it gives no machinetypes until vacd's "
                "first fetch of it lands (vac config check --fetch fetches it now)")


def legacy_cache_path(paths: Paths, url: str) -> Optional[str]:
    """Where Vac 03.00.02 cached this pipe: pipescache/<URL quoted, no safe characters>."""
    name = urllib.parse.quote(url, safe="")
    return os.path.join(paths.pipescache, name) if 0 < len(name) <= 255 else None


def read(path: str) -> Tuple[Optional[bytes], Optional[float]]:
    """(bytes, mtime) of a cached copy, (None, None) if there is none.

    Raises:
        OSError, StateError: unreadable, a symlink, not a regular file, too large.
    """
    try:
        data = read_bytes_nofollow(path, MAX_CACHE_BYTES)
    except FileNotFoundError:
        return None, None
    return data, mtime_or_none(path)


def encode(body: Mapping[str, Any], url: str) -> bytes:
    """The cached form of a document's body: compact ASCII JSON that names its URL."""
    stamped = dict(body)
    stamped[CACHE_URL_KEY] = url
    return json.dumps(stamped, separators=(",", ":")).encode("ascii")


def write(path: str, data: bytes, now: float) -> bool:
    """Write the cached copy atomically with mtime = now; True if its content changed."""
    try:
        before, _ = read(path)
    except (OSError, StateError):
        before = None
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    atomic_write(path, data, mtime=now)
    return before != data


def due(cache_seconds: float, mtime: Optional[float], now: float) -> bool:
    """Is a copy fetched at mtime due again? Also when it is dated in the future (the clock
    went back) or cache_seconds is 0."""
    if mtime is None or cache_seconds == 0 or mtime > now + CLOCK_SLACK_SECONDS:
        return True
    return mtime <= now - cache_seconds
