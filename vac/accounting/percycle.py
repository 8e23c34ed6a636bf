# SPDX-License-Identifier: BSD-2-Clause
"""What accounting and monitoring do once per factory cycle, called by the cycle after it has
acted: settle the pending APEL records, then the VacMon datagrams of the cycle.

Nothing here may stop the cycle: each part catches its own failures, logs and counts them.
"""
from __future__ import annotations

import logging

from vac.accounting import records
from vac.config.model import Config

log = logging.getLogger(__name__)


def after_cycle(config: Config, now: float) -> records.Settled:
    """Settle pending records (and send each one's machine_status to VacMon)."""
    from vac.accounting import vacmon

    sender = vacmon.Sender.for_settings(config.settings)
    settled = records.settle(config, now, after=lambda d: sender.machine_finished(config, d))
    if settled.archived or settled.rejected:
        log.info("APEL: %d archived, %d queued, %d rejected", len(settled.archived),
                 len(settled.queued), len(settled.rejected))
    sender.cycle_status(config, now)
    return settled
