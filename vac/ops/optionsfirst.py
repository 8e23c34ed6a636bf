# SPDX-License-Identifier: BSD-2-Clause
"""`vac [options] command`: the original's synopsis put a command's options before it
(`vac -J machines`, `vac -t 5 factories`, `vac -c CERT -k KEY proxy-init`). argparse wants them
after their command, so `reorder` moves every option of a command that comes before the
command to just after it (after `config check`'s second word too). vac's own options
(--config, --version, -h) stay where they are; an option no command knows is left in place,
for argparse to reject as it would anyway. Options that do not belong to the command are then
refused by the command's parser (exit status 2), as when given after it.
"""
from __future__ import annotations

import argparse
from typing import Dict, List, Optional, Tuple


def _subparsers(parser: argparse.ArgumentParser) -> Dict[str, argparse.ArgumentParser]:
    for action in parser._actions:   # argparse has no public walk of its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _arity(parser: argparse.ArgumentParser, into: Dict[str, bool]) -> Dict[str, bool]:
    """Every option string of every (sub)command -> whether it takes a value."""
    for action in parser._actions:
        for option in action.option_strings:
            into.setdefault(option, action.nargs != 0)
    for sub in _subparsers(parser).values():
        _arity(sub, into)
    return into


def _own(parser: argparse.ArgumentParser) -> Dict[str, bool]:
    return {option: action.nargs != 0 for action in parser._actions
            for option in action.option_strings}


def _option(token: str, arity: Dict[str, bool]) -> Optional[Tuple[str, bool]]:
    """(the option's name, whether its value is the next token), or None when no command
    knows it. `--timeout=5` and `-t5` carry their value."""
    if token.startswith("--"):
        name = token.split("=", 1)[0]
        return (name, arity[name] and "=" not in token) if name in arity else None
    name = token[:2]
    return (name, arity[name] and len(token) == 2) if name in arity else None


def reorder(parser: argparse.ArgumentParser, argv: List[str]) -> List[str]:
    """argv with the command options that precede the command moved after it."""
    arity = _arity(parser, {})
    own = _own(parser)
    kept: List[str] = []
    moved: List[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--" or not token.startswith("-") or token == "-":
            break
        name = token.split("=", 1)[0] if token.startswith("--") else token[:2]
        found = None if name in own else _option(token, arity)
        if name in own:
            width = 2 if own[name] and "=" not in token and len(token) <= len(name) else 1
            kept.extend(argv[i:i + width])
        elif found is None:
            break
        else:
            width = 2 if found[1] else 1
            moved.extend(argv[i:i + width])
        i += width
    if not moved or i >= len(argv):
        return list(argv)
    return kept + _after_command(parser, argv[i:], moved)


def _after_command(parser: argparse.ArgumentParser, rest: List[str],
                   moved: List[str]) -> List[str]:
    """rest (the command and its words) with moved put after the command's last word."""
    words = 1
    sub = _subparsers(parser).get(rest[0])
    while sub is not None and words < len(rest):
        nested = _subparsers(sub)
        if not nested or rest[words] not in nested:
            break
        sub = nested[rest[words]]
        words += 1
    return rest[:words] + moved + rest[words:]
