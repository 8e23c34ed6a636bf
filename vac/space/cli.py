# SPDX-License-Identifier: BSD-2-Clause
"""`vac machines`, `vac machinetype` and `vac factories`: the space as its factories say.

    vac machines [FACTORY...]          every slot of the given (or all) factories
    vac machinetype NAME [FACTORY...]  one machinetype's running machines and last outcome
    vac factories [FACTORY...]         each factory's capacity, load, disk and memory

Options: -t/--timeout SECONDS (default udp_timeout_seconds), -s/--space NAME, -J/--json (a
JSON array of the raw replies). `.` is this host; a short name gets this host's domain.
`vac slots` stays the local view from disk.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List, Optional

from vac.config import pipes
from vac.config.load import config_files
from vac.config.model import Settings
from vac.errors import ConfigError
from vac.host.facts import HostFacts
from vac.space import census, client, render
from vac.space import messages as m


def add_commands(sub) -> None:
    """Add the three space commands to vac's subparsers."""
    machines = sub.add_parser("machines", help="every slot of the space's factories")
    machines.add_argument("factories", nargs="*", metavar="FACTORY")
    machines.set_defaults(func=machines_command)
    mt = sub.add_parser("machinetype", help="one machinetype across the space")
    mt.add_argument("machinetype", nargs="?", metavar="NAME")
    mt.add_argument("factories", nargs="*", metavar="FACTORY")
    mt.set_defaults(func=machinetype_command)
    factories = sub.add_parser("factories", help="the space's factories: capacity, load, disk")
    factories.add_argument("factories", nargs="*", metavar="FACTORY")
    factories.set_defaults(func=factories_command)
    for parser in (machines, mt, factories):
        parser.add_argument("-t", "--timeout", type=float, default=None,
                            help="seconds to wait for replies (default udp_timeout_seconds)")
        parser.add_argument("-s", "--space", default=None, help="ask this space instead")
        parser.add_argument("-J", "--json", action="store_true",
                            help="print the raw replies as a JSON array")


def _settings(args: argparse.Namespace) -> Settings:
    return pipes.load_config(config_files(args.config), HostFacts.read(), update=False,
                             now=time.time()).settings


def _ask(args: argparse.Namespace, kind: str) -> Optional[client.Result]:
    try:
        s = _settings(args)
    except ConfigError as e:
        print(f"vac: configuration rejected: {e}", file=sys.stderr)
        return None
    names = args.factories or list(s.factories) or ["."]
    factories = client.canonical_list(names, s.factory_name)
    timeout = s.udp_timeout_seconds if args.timeout is None else args.timeout
    return client.query(kind, (args.space or s.vac_space).lower(), factories, timeout,
                        port=s.vacquery_port, program="vac")


def _print(lines: List[str]) -> None:
    for line in lines:
        print(line)


def _print_json(result: client.Result) -> None:
    print(json.dumps(result.all_replies(), indent=1, sort_keys=True))


def machines_command(args: argparse.Namespace) -> int:
    result = _ask(args, m.MACHINES)
    if result is None:
        return 1
    if args.json:
        _print_json(result)
    else:
        _print(render.machines_lines(result, time.time()))
    return 0


def machinetype_command(args: argparse.Namespace) -> int:
    if not args.machinetype:
        print("vac: machinetype needs a machinetype NAME", file=sys.stderr)
        return 1
    result = _ask(args, m.MACHINETYPES)
    if result is None:
        return 1
    if args.json:
        print(json.dumps([r for f in result.factories for k, r in
                          sorted(result.replies.get(f, {}).items())
                          if k == args.machinetype], indent=1, sort_keys=True))
    else:
        _print(render.machinetype_lines(result, args.machinetype))
    return 0


def factories_command(args: argparse.Namespace) -> int:
    result = _ask(args, m.FACTORY)
    if result is None:
        return 1
    if args.json:
        _print_json(result)
    else:
        now = time.time()
        _print(render.factories_lines(result, census.fresh_census(_settings(args), now), now))
    return 0
