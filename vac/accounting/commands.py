# SPDX-License-Identifier: BSD-2-Clause
"""`vac apel-sync [YYYYMM...]`: queue an APEL sync record per month for ssmsend.

Exit codes as every vac command's: 0 done, 1 a record could not be written (or the
configuration is rejected), 2 wrong arguments (a month that is not YYYYMM). The original
exited 1 for a bad month and 2 for a record not written. The record is checked against the loader's
rules and queued in apel-outgoing/ with dirq, as the job records are; without gocdb_sitename
it is printed and not queued (the job records are not queued then either).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Tuple

WRITE_FAILED = 1


def add_commands(subparsers) -> None:
    """Add apel-sync to vac's subcommands."""
    sync = subparsers.add_parser(
        "apel-sync", help="queue APEL sync records (job counts per month) for ssmsend")
    sync.add_argument("months", nargs="*", metavar="YYYYMM", type=_month, default=[],
                      help="months to sum up (default: the month of 24 hours ago)")
    sync.set_defaults(func=apel_sync)


def _month(text: str) -> Tuple[int, int]:
    """A YYYYMM argument as (year, month); an argument error (exit 2) otherwise."""
    from vac.accounting import sync

    try:
        return sync.parse_month(text)
    except sync.MonthError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def apel_sync(args: argparse.Namespace) -> int:
    from vac.accounting import sync
    from vac.accounting.validate import RecordError, check_sync
    from vac.config.forcommand import load_for_command
    from vac.errors import ConfigError

    now = time.time()
    months = args.months or [sync.default_month(now)]
    try:
        config = load_for_command(args.config, now)
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
