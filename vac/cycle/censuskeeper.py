# SPDX-License-Identifier: BSD-2-Clause
"""The census a cycle decides from: this factory's, counted from the cycle's observation and
finishes/, added to the other factories' (vac.space.census.SpacePoll, the factory's
`space_census` hook). A full cycle polls the space anew; a refill reuses the last poll.
A poll that fails leaves this factory deciding alone until the next one.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, Iterable, Optional

from vac.config.model import Config
from vac.errors import VacError
from vac.machine.finishes import last_outcome
from vac.machine.observed import Observed
from vac.machine.outcome import LastOutcome
from vac.space.censusdata import Census, add_census, local_census

log = logging.getLogger(__name__)

SpaceCensus = Callable[..., Dict[str, Census]]   # (config, local census, now) -> the space's


class CensusKeeper:
    """Counts this factory's census and keeps the other factories' from the last poll."""

    def __init__(self, space_census: Optional[SpaceCensus] = None):
        self.space_census = space_census
        self.remote: Dict[str, Census] = {}   # the other factories' census

    def census(self, config: Config, observed: Iterable[Observed], now: float,
               fresh: bool = True) -> Dict[str, Census]:
        """This factory's census with the other factories': polled anew if `fresh`, else
        (a refill) as the last cycle's poll found them."""
        local = local_census(observed, _outcomes(config), config.machinetypes, now)
        if self.space_census is not None and fresh:
            self.remote = self._poll(config, now)
        return add_census(local, self.remote)

    def _poll(self, config: Config, now: float) -> Dict[str, Census]:
        try:  # bounded by the poll itself, never fatal
            return self.space_census(config, {}, now)
        except Exception:  # noqa: BLE001 - a poll must not stop the cycle
            log.exception("space census failed; deciding from this factory alone")
            return {}


def _outcomes(config: Config) -> Dict[str, LastOutcome]:
    """Each machinetype's last outcome from finishes/ (an unreadable record is logged)."""
    outcomes = {}
    for name in config.machinetypes:
        try:
            outcome = last_outcome(config.settings.paths, name)
        except (OSError, VacError) as e:
            log.error("finishes/%s cannot be read: %s", name, e)
            outcome = None
        if outcome is not None:
            outcomes[name] = outcome
    return outcomes
