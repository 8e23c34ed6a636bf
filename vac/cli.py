# SPDX-License-Identifier: BSD-2-Clause
"""vac: the command-line tool. Imports no backend library.

Exit status of every command: 0 done, 1 failed (a rejected configuration, a failed check,
nothing answered), 2 wrong arguments, 130 interrupted, 141 (128 + SIGPIPE) when the reader of
its output went away (`vac slots | head`): the command then ends quietly, no traceback.

    vac [--config FILE]... config check [--json] [--fetch]
    vac [--config FILE]... slots [--json] [--totals] [--machinetype NAME] [--state STATE]
"""
from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from typing import List, Optional

from vac import __version__, ops, slotscommand
from vac.accounting import commands as accounting_cli
from vac.config import pipes
from vac.config.load import config_files
from vac.config.model import Config
from vac.config.unsupported import notes as unsupported_notes
from vac.errors import ConfigError
from vac.host.facts import HostFacts
from vac.ops import optionsfirst
from vac.space import cli as space_cli

SHOWN_OPTIONS = ("target_share", "machine_model", "root_image", "user_data", "min_processors",
                 "max_processors", "max_wallclock_seconds", "min_wallclock_seconds",
                 "backoff_seconds", "fizzle_seconds", "heartbeat_file", "heartbeat_seconds",
                 "accounting_fqan", "machinegroup", "container_command", "cvmfs_repositories",
                 "mb_per_processor", "docker_network", "docker_ulimits", "docker_pull_seconds")
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
    check = config_sub.add_parser("check", help="validate config and pipes, show machinetypes")
    check.add_argument("--json", action="store_true")
    check.add_argument("--fetch", action="store_true",
                       help="fetch pipes now (default: use the pipe cache only)")
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


def _load(args: argparse.Namespace, update: bool) -> Config:
    return pipes.load_config(config_files(args.config), HostFacts.read(), update=update,
                             now=time.time())


def _say(text: str) -> None:
    print(f"vac: {text}", file=sys.stderr, flush=True)


def config_check(args: argparse.Namespace) -> int:
    try:   # --fetch: every pipe now, whatever its cache's age, in parallel, saying what for
        config, found = pipes.load_config_with_pipes(
            config_files(args.config), HostFacts.read(), update=False, now=time.time(),
            force=args.fetch, progress=_say if args.fetch else None)
    except ConfigError as e:
        if args.json:
            print(json.dumps({"ok": False, "problems": [p.__dict__ for p in e.problems]},
                             indent=1))
        else:
            print("vac: configuration rejected:", file=sys.stderr)
            for problem in e.problems:
                print(f"  {problem}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(dict(_config_json(config), pipes_not_fetched=list(found.unfetched)),
                         indent=1, sort_keys=True, allow_nan=False))
    else:
        _print_config(config)
        for note in found.unfetched:
            print(f"pipe: {note}")
    return 0


def _config_json(config: Config) -> dict:
    return {"ok": True, "files": list(config.files), "warnings": list(config.warnings),
            "unsupported": unsupported_notes(config),
            "space": config.settings.vac_space, "factory": config.settings.factory_name,
            "machinetypes": {
                name: {opt: {"value": _jsonable(getattr(mt, opt)),
                             "from": mt.origins.get(opt, "default")} for opt in SHOWN_OPTIONS}
                for name, mt in config.machinetypes.items()}}


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


def _print_config(config: Config) -> None:
    s = config.settings
    print(f"configuration OK: space {s.vac_space}, factory {s.factory_name}, "
          f"{s.total_processors} processors, files: {', '.join(config.files)}")
    for warning in list(config.warnings) + unsupported_notes(config):
        print(f"warning: {warning}")
    for name, mt in config.machinetypes.items():
        print(f"\n[machinetype {name}]" + (f"  (pipe {mt.pipe})" if mt.pipe else ""))
        for opt in SHOWN_OPTIONS:
            value = getattr(mt, opt)
            if value in (None, ()):
                continue
            shown = " ".join(value) if isinstance(value, tuple) else value
            print(f"  {opt:24} = {shown!s:40}  # {mt.origins.get(opt, 'default')}")
    if not config.machinetypes:
        print("\nno machinetypes configured: this factory will create nothing")


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
    if args.command == "config":
        return config_check(args)
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
