# SPDX-License-Identifier: BSD-2-Clause
"""`vac [options] command`: every option of every command parses the same before the command
(the original's synopsis: `vac -J machines`, `vac -t 5 factories`) as after it; an option the
command does not take is refused either way (exit status 2), never ignored."""
from __future__ import annotations

import argparse
import contextlib
import io
from typing import Iterator, List, Tuple

import pytest

from vac import cli
from vac.ops import optionsfirst


def _subs(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(parser, words=()) -> Iterator[Tuple[Tuple[str, ...], argparse.ArgumentParser]]:
    subs = _subs(parser)
    if not subs and words:
        yield words, parser
    for name, sub in subs.items():
        yield from _commands(sub, words + (name,))


def _required(sub: argparse.ArgumentParser) -> List[str]:
    """Arguments that make the command's parser accept a line: positionals and required
    options (proxy-init's -c and -k), each with a value."""
    argv: List[str] = []
    for action in sub._actions:
        if not action.option_strings and action.nargs in (None, "+"):
            argv.append("x")
        elif action.option_strings and action.required:
            argv += [action.option_strings[0], "x"]
    return argv


def _cases() -> List[Tuple[Tuple[str, ...], List[str], List[str]]]:
    """(command words, an option with its value, the command's required arguments)."""
    cases = []
    for words, sub in _commands(cli.build_parser()):
        for action in sub._actions:
            if not action.option_strings or action.required or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._HelpAction):
                continue
            value = [] if action.nargs == 0 else [str((action.choices or ["5"])[0])]
            for option in action.option_strings:
                cases.append((words, [option] + value, _required(sub)))
    return cases


CASES = _cases()


def _parse(argv: List[str]) -> argparse.Namespace:
    with contextlib.redirect_stderr(io.StringIO()):
        return cli.parse_args(argv)


def test_the_cases_cover_the_originals_options():
    seen = {(" ".join(words), opt[0]) for words, opt, _ in CASES}
    for command in ("machines", "factories", "machinetype"):
        for option in ("-t", "--timeout", "-s", "--space", "-J", "--json"):
            assert (command, option) in seen
    for option in ("-l", "--legacy-proxy"):   # -c and -k are required: in every case
        assert ("proxy-init", option) in seen


@pytest.mark.parametrize("words,option,required", CASES,
                         ids=[f"{' '.join(w)} {' '.join(o)}" for w, o, _ in CASES])
def test_every_option_parses_the_same_before_and_after_its_command(words, option, required):
    after = _parse(["--config", "/x.conf", *words, *option, *required])
    before = _parse(["--config", "/x.conf", *option, *words, *required])
    assert vars(before) == vars(after)


def test_the_originals_synopsis_lines():
    assert _parse(["-J", "machines"]).json is True
    ns = _parse(["-t", "5", "factories", "a", "b"])
    assert (ns.timeout, ns.factories) == (5.0, ["a", "b"])
    ns = _parse(["-s", "other.example", "--timeout=2.5", "machinetype", "atlas", "f1"])
    assert (ns.space, ns.timeout, ns.machinetype, ns.factories) == \
        ("other.example", 2.5, "atlas", ["f1"])
    ns = _parse(["-l", "-c", "/c.pem", "-k", "/k.pem", "proxy-init"])
    assert (ns.cert, ns.key, ns.legacy_proxy) == ("/c.pem", "/k.pem", True)
    ns = _parse(["--json", "--config", "/a.conf", "config", "check"])
    assert (ns.json, ns.config, ns.config_command) == (True, ["/a.conf"], "check")
    assert _parse(["-t5", "machines"]).timeout == 5.0


@pytest.mark.parametrize("argv", [["-t", "5", "slots"], ["-J", "apel-sync"],
                                  ["--fetch", "machines"], ["--bogus", "machines"],
                                  ["-t", "0", "factories"]])
def test_an_option_the_command_does_not_take_is_refused_before_it_too(argv):
    with pytest.raises(SystemExit) as e:
        _parse(argv)
    assert e.value.code == 2


def test_vacs_own_options_stay_and_a_line_without_a_command_is_left_alone():
    parser = cli.build_parser()
    assert optionsfirst.reorder(parser, ["--config", "a", "-J", "machines", "f"]) == \
        ["--config", "a", "machines", "-J", "f"]
    assert optionsfirst.reorder(parser, ["-J"]) == ["-J"]
    assert optionsfirst.reorder(parser, ["machines", "-J"]) == ["machines", "-J"]
    assert optionsfirst.reorder(parser, ["--version"]) == ["--version"]
