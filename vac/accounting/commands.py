# SPDX-License-Identifier: BSD-2-Clause
"""`vac apel-sync [YYYYMM...]`: queue an APEL sync record per month for ssmsend.

Exit codes as the original's: 0 done, 1 a month argument is not YYYYMM, 2 a record could not
be written (or the configuration cannot be read). The record is checked against the loader's
rules and queued in apel-outgoing/ with dirq, as the job records are; without gocdb_sitename
it is printed and not queued (the job records are not queued then either).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Tuple

BAD_MONTH, WRITE_FAILED = 1, 2


def add_commands(subparsers) -> None:
    """Add apel-sync to vac's subcommands."""
    sync = subparsers.add_parser(
        "apel-sync", help="queue APEL sync records (job counts per month) for ssmsend")
    sync.add_argument("months", nargs="*", metavar="YYYYMM",
                      help="months to sum up (default: the month of 24 hours ago)")
    sync.set_defaults(func=apel_sync)


def _months(args: argparse.Namespace, now: float) -> List[Tuple[int, int]]:
    from vac.accounting import sync

    if not args.months:
        return [sync.default_month(now)]
    return [sync.parse_month(m) for m in args.months]


def apel_sync(args: argparse.Namespace) -> int:
    from vac.accounting import sync
    from vac.accounting.validate import RecordError, check_sync
    from vac.config import pipes
    from vac.config.load import config_files
    from vac.errors import ConfigError
    from vac.host.facts import HostFacts

    now = time.time()
    try:
        months = _months(args, now)
    except sync.MonthError as e:
        print(f"vac apel-sync: {e}", file=sys.stderr)
        return BAD_MONTH
    try:
        config = pipes.load_config(config_files(args.config), HostFacts.read(), update=False,
                                   now=now)
    except ConfigError as e:
        print(f"vac apel-sync: configuration rejected: {e}", file=sys.stderr)
        return WRITE_FAILED
    paths, code = config.settings.paths, 0
    for year, month in months:
        count = sync.count_month(paths, year, month)
        for why in count.skipped:
            print(f"skipped {why}", file=sys.stderr)
        text = count.record()
        if text is None:
            print(f"{year:04d}{month:02d}: no job records, no sync record")
            continue
        try:
            check_sync(text)
            if config.settings.gocdb_sitename:
                from dirq.QueueSimple import QueueSimple

                name = QueueSimple(paths.apel_outgoing, umask=0o022).add(text)
                print(f"{year:04d}{month:02d}: {count.jobs} jobs of {count.submit_host}, "
                      f"queued as apel-outgoing/{name}")
            else:
                print(f"{year:04d}{month:02d}: {count.jobs} jobs; gocdb_sitename is not set, "
                      f"not queued:\n{text}", end="")
        except (OSError, RecordError) as e:
            print(f"vac apel-sync: {year:04d}{month:02d}: cannot write the sync record: {e}",
                  file=sys.stderr)
            code = WRITE_FAILED
    return code
