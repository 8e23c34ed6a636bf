# SPDX-License-Identifier: BSD-2-Clause
"""What accounting and monitoring do once per factory cycle, called by the cycle: after it has
acted, settle the pending APEL records (each settled machine's VacMon machine_status goes out
then, after its `finished` file); after its summary, the VacMon factory_status and
machinetype_status, the version logger when it is on, and GOCDB when it is due.

Nothing here may stop the cycle: each part catches its own failures, logs and counts them.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Optional

from vac import fsutil
from vac.accounting import gocdb, records
from vac.config.model import Config
from vac.space import vacmon

log = logging.getLogger(__name__)

VERSION_LOGGER = ("vac-version-logger.gridpp.ac.uk", 8884)
VERSION_COPIES = 5
VERSION_INTERVAL = 1.0        # seconds between the copies
VERSION_MARKER = "factory-version-logged"
_logged_since_start = threading.Event()   # the first message of this vacd goes out at once


def settle_records(config: Config, now: float) -> records.Settled:
    """Settle pending records (and send each one's machine_status to VacMon)."""
    sender = vacmon.Sender.for_settings(config.settings)
    settled = records.settle(config, now, after=lambda d: sender.machine_finished(config, d))
    if settled.archived or settled.rejected:
        log.info("APEL: %d archived, %d queued, %d rejected", len(settled.archived),
                 len(settled.queued), len(settled.rejected))
    return settled


def monitor_cycle(config: Config, now: float) -> None:
    """The cycle's VacMon status, the version logger, GOCDB; each failure logged only."""
    for name, part in (("VacMon status", lambda: vacmon.Sender.for_settings(
            config.settings).cycle_status(config, now)),
                       ("version logger", lambda: _version_logger(config, now)),
                       ("GOCDB update", lambda: _gocdb(config, now))):
        try:
            part()
        except Exception:  # noqa: BLE001 - monitoring must not stop the cycle
            log.exception("%s failed this cycle", name)


def _version_logger(config: Config, now: float) -> Optional[threading.Thread]:
    """Send factory_status VERSION_COPIES times, 1 s apart, in a thread of its own, at start
    and then version_logger times a day (off unless version_logger is set)."""
    per_day = config.settings.version_logger
    if per_day <= 0:
        return None
    marker = os.path.join(config.settings.state_dir, VERSION_MARKER)
    when = fsutil.mtime_or_none(marker)
    if _logged_since_start.is_set() and when is not None and now - when < 86400 / per_day:
        return None
    _logged_since_start.set()
    fsutil.atomic_write(marker, "", mtime=now)
    sender = vacmon.Sender([VERSION_LOGGER])

    def send() -> None:
        for copy in range(VERSION_COPIES):
            if copy:
                time.sleep(VERSION_INTERVAL)
            sender.cycle_status(config, now, machinetypes=False)

    thread = threading.Thread(target=send, name="version-logger", daemon=True)
    thread.start()
    return thread


def _gocdb(config: Config, now: float) -> None:
    gocdb.update_if_due(config, now)
