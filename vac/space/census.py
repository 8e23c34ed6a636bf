# SPDX-License-Identifier: BSD-2-Clause
"""The space-wide census: each cycle's poll of the other factories, and the hourly census.

SpacePoll is the Factory's `space_census` hook. Every cycle it asks the factories named in
`factories` (this factory's own census is the cycle's, counted locally) for their
machinetype_status replies, merges them into the planner's Census per machinetype and adds
the local one, as the original did: target shares summed over the space, and backoff from an abort
anywhere. The poll never takes longer than udp_timeout_seconds; a factory that does not
answer is left out, and a failing poll leaves the local census alone. Machinetypes only
other factories know are ignored.

Once an hour (marker `census-updated`), in a thread of its own so the cycle does not wait,
it also asks every factory for its factory_status and writes each reply to
`space-census/<factory>`; files older than two days are deleted, and fresh_census() gives
those of the last day.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any, Callable, Dict, List, Mapping, Optional

from vac import fsutil
from vac.config.model import Config, Settings
from vac.space import client
from vac.space import messages as m
from vac.space.censusdata import Census, add_census, merge_census

log = logging.getLogger(__name__)

CENSUS_INTERVAL = 3600
CENSUS_FRESH = 86400
CENSUS_KEEP = 172800
PROGRAM = "vacd-factory"
Query = Callable[..., client.Result]


def census_dir(settings: Settings) -> str:
    return os.path.join(settings.state_dir, "space-census")


def others(settings: Settings) -> List[str]:
    """The other factories of the space, canonical, without this one."""
    own = settings.factory_name
    return [f for f in client.canonical_list(settings.factories, own) if f != own]


def remote_census(result: client.Result, known: Mapping[str, Any]) -> Dict[str, Census]:
    """The merged machinetype_status replies, for the machinetypes this factory knows."""
    merged = merge_census(r for f in result.factories
                          for r in result.replies.get(f, {}).values())
    return {name: entry for name, entry in merged.items() if name in known}


class SpacePoll:
    """Factory hook: (config, local census, now) -> the space's census."""

    def __init__(self, query: Query = client.query):
        self.query = query
        self.silent: List[str] = []
        # What the last poll returned and when (the status page shows them): the factory
        # passes no local census, so these are the other factories' sums.
        self.census: Dict[str, Census] = {}
        self.polled: Optional[float] = None
        self._census_thread: Optional[threading.Thread] = None

    def __call__(self, config: Config, local: Dict[str, Census],
                 now: float) -> Dict[str, Census]:
        s = config.settings
        targets = others(s)
        if not targets:
            return local
        try:
            result = self.query(m.MACHINETYPES, s.vac_space, targets, s.udp_timeout_seconds,
                                port=s.vacquery_port, program=PROGRAM)
        except Exception as e:  # noqa: BLE001 - a poll must never stop the cycle
            log.warning("space poll failed, deciding from this factory alone: %s", e)
            return local
        self.silent = result.silent()
        if self.silent:
            log.info("space poll: no reply from %s", ", ".join(self.silent))
        _log_losses(result)
        census = add_census(local, remote_census(result, config.machinetypes))
        self.census, self.polled = dict(census), now
        self._start_census(config, now)
        return census

    def _start_census(self, config: Config, now: float) -> None:
        """The hourly census in a thread of its own, so it never lengthens a cycle."""
        if self._census_thread is not None and self._census_thread.is_alive():
            return
        self._census_thread = threading.Thread(target=self._census, args=(config, now),
                                               name="vac-census", daemon=True)
        self._census_thread.start()

    def _census(self, config: Config, now: float) -> None:
        try:
            update_census(config, now, self.query)
        except Exception as e:  # noqa: BLE001 - a census failure is only logged
            log.warning("space census not updated: %s", e)


def _log_losses(result: client.Result) -> None:
    """Replies refused (with the datagram named) and factories still short after the rounds."""
    if result.refused_count:
        log.warning("space poll: %d replies refused, first %s", result.refused_count,
                    result.refused[0] if result.refused else "")
    for factory, got, announced in result.short():
        log.info("space poll: %s sent %d of %d replies after %d asks", factory, got,
                 announced, result.asks.get(factory, 0))


def update_census(config: Config, now: float, query: Query = client.query) -> bool:
    """Ask every factory for its factory_status if the last census is an hour old."""
    s = config.settings
    marker = os.path.join(s.state_dir, "census-updated")
    last = fsutil.mtime_or_none(marker)
    if last is not None and 0 <= now - last < CENSUS_INTERVAL:
        return False
    fsutil.atomic_write(marker, str(int(now)), mtime=now)
    factories = client.canonical_list(list(s.factories) or ["."], s.factory_name)
    result = query(m.FACTORY, s.vac_space, factories, s.udp_timeout_seconds,
                   port=s.vacquery_port, program=PROGRAM)
    write_census(s, result, now)
    return True


def write_census(settings: Settings, result: client.Result, now: float) -> None:
    """space-census/<factory> per reply; delete files older than CENSUS_KEEP."""
    folder = census_dir(settings)
    os.makedirs(folder, mode=0o755, exist_ok=True)
    for factory, replies in result.replies.items():
        reply = replies.get("")
        if reply is not None and _safe_name(factory):
            fsutil.atomic_write(os.path.join(folder, factory),
                                json.dumps(reply, sort_keys=True), mtime=now)
    for entry in os.scandir(folder):
        mtime = fsutil.mtime_or_none(entry.path)
        if mtime is not None and now - mtime > CENSUS_KEEP:
            os.unlink(entry.path)


def fresh_census(settings: Settings, now: float) -> Dict[str, Dict[str, Any]]:
    """factory -> factory_status from census files written within the last day."""
    folder = census_dir(settings)
    found: Dict[str, Dict[str, Any]] = {}
    if not os.path.isdir(folder):
        return found
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        mtime = fsutil.mtime_or_none(entry.path)
        if mtime is None or now - mtime > CENSUS_FRESH:
            continue
        try:
            reply = json.loads(fsutil.read_optional(entry.path, m.REPLY_LIMIT) or "")
        except ValueError:
            continue
        if isinstance(reply, dict):
            found[entry.name] = reply
    return found


def _safe_name(factory: str) -> bool:
    return bool(factory) and len(factory) <= 255 and "/" not in factory and \
        not factory.startswith(".") and all(c.isalnum() or c in "-._" for c in factory)

