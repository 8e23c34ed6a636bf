# SPDX-License-Identifier: BSD-2-Clause
"""vac: the command-line tool. Imports no backend library.

Exit status of every command: 0 done, 1 failed (a rejected configuration, a failed check,
nothing answered), 2 wrong arguments, 3 warnings (`config check --strict` only), 130
interrupted, 141 (128 + SIGPIPE) when the reader of its output went away (`vac slots | head`):
the command then ends quietly, no traceback.

    vac [--config FILE]... config check [--json] [--fetch] [--strict]
    vac [--config FILE]... config get [-v] [MACHINETYPE] OPTION
    vac [--config FILE]... slots [--json] [--totals] [--machinetype NAME] [--state STATE]
"""
from __future__ import annotations

import argparse
import os
import select
import sys
from typing import List, Optional

from vac import __version__, configcommand, ops, slotscommand
from vac.accounting import commands as accounting_cli
from vac.ops import optionsfirst
from vac.space import cli as space_cli

CLOSED_PIPE = 141   # 128 + SIGPIPE: what a shell reports for a tool its closed pipe ended
INTERRUPTED = 130   # 128 + SIGINT


def build_parser() -> argparse.ArgumentParser:
    """vac's whole parser (tests/unit/test_manpages.py checks vac.1 against it)."""
    parser = argparse.ArgumentParser(prog="vac", description="Look at and check a Vac factory.")
    parser.add_argument("--config", action="append", metavar="FILE",
                        help="config file to read instead of the standard ones (repeatable)")
    parser.add_argument("--version", action="version", version=f"vac {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    config = sub.add_parser("config", help="configuration commands")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    configcommand.add_commands(config_sub)    # check and get
    slots = sub.add_parser("slots", help="vacd, this factory's slots and why idle ones are idle")
    slotscommand.add_arguments(slots)
    slots.set_defaults(func=slotscommand.slots_command)
    ops.add_commands(sub)
    space_cli.add_commands(sub)
    accounting_cli.add_commands(sub)
    return parser


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """`vac [options] command` as the original's synopsis, and `vac command [options]`."""
    parser = build_parser()
    return parser.parse_args(optionsfirst.reorder(parser, sys.argv[1:] if argv is None else argv))


def slots_command(args: argparse.Namespace) -> int:
    return slotscommand.slots_command(args)


def main(argv: Optional[List[str]] = None) -> int:
    """Run one command; its exit status. A reader that goes away (`vac slots | head`) ends the
    command quietly with CLOSED_PIPE, as a tool killed by SIGPIPE would; ^C ends it with 130."""
    try:
        try:
            code = _run(parse_args(argv))
        finally:        # also after --help, --version and argument errors (SystemExit)
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        if not _output_gone():
            raise
        return CLOSED_PIPE
    except KeyboardInterrupt:
        return INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "func", None) is not None:
        return args.func(args)
    return slots_command(args)


def _output_gone() -> bool:
    """True when stdout or stderr is a pipe whose reader has closed it; both are then pointed
    at /dev/null, so nothing (not even the interpreter's last flush) writes there again."""
    gone = False
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if any(event & select.POLLERR for _, event in poller.poll(0)):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)
            gone = True
    return gone


if __name__ == "__main__":
    sys.exit(main())
