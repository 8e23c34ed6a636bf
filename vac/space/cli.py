# SPDX-License-Identifier: BSD-2-Clause
"""`vac machines`, `vac machinetype` and `vac factories`: the space as its factories say.

    vac machines [FACTORY...]          every slot of the given (or all) factories
    vac machinetype NAME [FACTORY...]  one machinetype's running machines and last outcome
    vac factories [FACTORY...]         each factory's capacity, load, disk and memory

Options: -t/--timeout SECONDS (default udp_timeout_seconds; more than 0, at most an hour),
-s/--space NAME, -J/--json (a JSON array of the raw replies). `.` is this host; a short name
gets this host's domain. Exit status 0 when a factory answered (for machinetype: when one
reports NAME), 1 when none did or the configuration is rejected, 2 for wrong arguments.
`vac slots` stays the local view from disk.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import List, Optional, Tuple

from vac.config.forcommand import load_for_command
from vac.config.model import Settings
from vac.errors import ConfigError
from vac.space import census, client, render
from vac.space import messages as m


MAX_TIMEOUT = 3600.0


def seconds(text: str) -> float:
    """-t/--timeout: a finite number of seconds, more than 0 and at most MAX_TIMEOUT."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give seconds more than 0 and at most {MAX_TIMEOUT:g}")
    return value


def add_commands(sub) -> None:
    """Add the three space commands to vac's subparsers."""
    machines = sub.add_parser("machines", help="every slot of the space's factories")
    machines.add_argument("factories", nargs="*", metavar="FACTORY", default=[])
    machines.set_defaults(func=machines_command)
    mt = sub.add_parser("machinetype", help="one machinetype across the space")
    mt.add_argument("machinetype", metavar="NAME")
    mt.add_argument("factories", nargs="*", metavar="FACTORY", default=[])
    mt.set_defaults(func=machinetype_command)
    factories = sub.add_parser("factories", help="the space's factories: capacity, load, disk")
    factories.add_argument("factories", nargs="*", metavar="FACTORY", default=[])
    factories.set_defaults(func=factories_command)
    for parser in (machines, mt, factories):
        parser.add_argument("-t", "--timeout", type=seconds, default=None,
                            help="seconds to wait for replies (default udp_timeout_seconds)")
        parser.add_argument("-s", "--space", default=None, help="ask this space instead")
        parser.add_argument("-J", "--json", action="store_true",
                            help="print the raw replies as a JSON array")


def _settings(args: argparse.Namespace) -> Settings:
    return load_for_command(args.config).settings


def _ask(args: argparse.Namespace, kind: str) -> Optional[Tuple[Settings, client.Result]]:
    try:
        s = _settings(args)
    except ConfigError as e:
        print(f"vac: configuration rejected: {e}", file=sys.stderr)
        return None
    names = args.factories or list(s.factories) or ["."]
    factories = client.canonical_list(names, s.factory_name)
    timeout = s.udp_timeout_seconds if args.timeout is None else args.timeout
    return s, client.query(kind, (args.space or s.vac_space).lower(), factories, timeout,
                           port=s.vacquery_port, program="vac")


def _print(lines: List[str]) -> None:
    for line in lines:
        print(line)


def _print_json(replies: List[dict]) -> None:
    print(json.dumps(replies, indent=1, sort_keys=True))


def _answered(result: client.Result) -> int:
    """0 when a factory answered, else 1 with a line on stderr saying so; replies still
    missing after the asks, and replies refused, are said on stderr too."""
    for factory, got, announced in result.short():
        print(f"vac: {factory}: {got} of {announced} replies after "
              f"{result.asks.get(factory, 0)} asks", file=sys.stderr)
    for refused in result.refused:
        print(f"vac: reply refused {refused}", file=sys.stderr)
    if result.refused_count > len(result.refused):
        print(f"vac: {result.refused_count - len(result.refused)} more replies refused",
              file=sys.stderr)
    if result.replies:
        return 0
    print(f"vac: no factory answered ({len(result.factories)} asked: "
          f"{len(result.unresolved)} do not resolve, {len(result.no_reply())} sent no reply "
          f"in {result.timeout:g} s)", file=sys.stderr)
    return 1


def machines_command(args: argparse.Namespace) -> int:
    asked = _ask(args, m.MACHINES)
    if asked is None:
        return 1
    result = asked[1]
    if args.json:
        _print_json(result.all_replies())
    else:
        _print(render.machines_lines(result, time.time()))
    return _answered(result)


def machinetype_command(args: argparse.Namespace) -> int:
    asked = _ask(args, m.MACHINETYPES)
    if asked is None:
        return 1
    result = asked[1]
    found = [r for f in result.factories for k, r in sorted(result.replies.get(f, {}).items())
             if k == args.machinetype]
    if args.json:
        _print_json(found)
    else:
        _print(render.machinetype_lines(result, args.machinetype))
    if found:
        return 0
    if _answered(result):
        return 1
    print(f"vac: no machinetype {args.machinetype} on the {len(result.replies)} factories "
          "that answered", file=sys.stderr)
    return 1


def factories_command(args: argparse.Namespace) -> int:
    asked = _ask(args, m.FACTORY)
    if asked is None:
        return 1
    s, result = asked
    if args.json:
        _print_json(result.all_replies())
    else:
        now = time.time()
        _print(render.factories_lines(result, census.fresh_census(s, now), now))
    return _answered(result)
